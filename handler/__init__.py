"""Serving for kplate: the TorchServe handler, the .mar builder and the local KServe front.

Modules:
    protocol: pure request parsing and response building (no model, no server).
    settings: the handler settings read from ``model-config.yaml``.
    kplate_handler: the TorchServe ``BaseHandler`` subclass (entry point of the .mar).
    archive: builds ``<model>.mar`` with ``torch-model-archiver``.
    kserve_front: the KServe-protocol front (``kserve.ModelServer``) that forwards to TorchServe.
    local_serving: starts, watches and stops TorchServe plus the front on this machine.

Only ``protocol``, ``settings`` and ``kplate_handler`` travel inside the .mar; the engine
(``kplate``) never imports anything from here.
"""
