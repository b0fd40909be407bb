"""TorchServe handler for kplate: the entry point of ``kplate.mar``.

Thin by design: :mod:`handler.protocol` parses each request and builds its response,
``kplate.Recognizer`` does the work. TorchServe may hand ``handle`` several requests at once
(``batchSize`` > 1); their images are recognised in one engine call, and a request whose body
is bad fails alone, with its own 4xx status and a JSON message, while the others succeed.

Inside the .mar this file sits at the top level next to the ``handler`` and ``kplate``
package copies, and TorchServe puts the model directory first on the worker's ``PYTHONPATH``,
so the archive runs on a stock ``pytorch/torchserve-kfs`` image plus the engine's pip deps.
"""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

import kplate
from handler.protocol import (
    BatchState,
    EngineError,
    UnexpectedError,
    build_response,
    decode_images,
    encode_json,
    error_body,
    parse_request,
)
from handler.settings import HandlerSettings, load_settings
from kplate.errors import KplateError
from kplate.recognizer import Recognizer

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
#: Errors of one engine call that make the handler retry request by request, so one image
#: that trips the engine fails only its own request.
ENGINE_ERRORS = (KplateError, RuntimeError, ValueError)


class KplateHandler(BaseHandler):
    """Adapts TorchServe requests to ``kplate.Recognizer`` and its results to responses.

    The only class of this module: TorchServe's loader requires exactly one.
    """

    def __init__(self) -> None:
        """Create an uninitialised handler; TorchServe calls :meth:`initialize` next."""
        super().__init__()
        self.settings = HandlerSettings()
        self.recognizer: Any = None
        self.model_name = "kplate"

    # -- lifecycle ------------------------------------------------------------------------

    def initialize(self, context: Any) -> None:
        """Read the settings, pick the device from ``gpu_id`` and load the engine.

        Raises:
            ConfigError: invalid ``handler:`` section in ``model-config.yaml``.
            WeightsError: the weights are missing or do not fit the model code.
        """
        self.context = context
        self.manifest = context.manifest
        self.model_name = context.model_name or self.model_name
        self.settings = load_settings(context.model_yaml_config)
        if self.settings.torch_threads is not None:
            torch.set_num_threads(self.settings.torch_threads)
        properties = context.system_properties
        self.device = select_device(properties.get("gpu_id"))
        model_dir = Path(properties.get("model_dir") or ".")
        weights_dir = model_dir / self.settings.weights_dir if self.settings.weights_dir else None

        logger.info("kplate %s imported from %s", kplate.__version__, Path(kplate.__file__).parent)
        self.recognizer = Recognizer.load(weights_dir=weights_dir, device=self.device)
        logger.info(
            "kplate loaded on %s from %s (torch %s, threads %d, settings %s)",
            self.recognizer.device,
            weights_dir or "the shipped weights",
            torch.__version__,
            torch.get_num_threads(),
            self.settings.model_dump(),
        )
        if self.settings.warmup:
            with torch.inference_mode():
                self.recognizer.recognize([np.zeros((480, 640, 3), dtype=np.uint8)])
        self.initialized = True

    # -- request path ---------------------------------------------------------------------

    def handle(self, data: list[Any], context: Any) -> list[bytes]:
        """Answer a batch of requests: one response body per request, in order.

        Args:
            data: one mapping per request, as TorchServe passes it.
            context: the TorchServe context (headers, per-request status, metrics).

        Returns:
            One UTF-8 JSON body per request; failed requests get their 4xx status set through
            ``context.set_response_status`` and ``{"error": ..., "code": ...}`` as body.
        """
        start = time.perf_counter()
        self.context = context
        batch = self.preprocess(data)
        batch = self.inference(batch)
        output = self.postprocess(batch)
        elapsed_ms = (time.perf_counter() - start) * 1000
        images = sum(len(a) for a in batch.arrays)
        logger.info(
            "kplate batch: %d requests, %d images, %d failed, %.1f ms",
            len(data),
            images,
            len(batch.errors),
            elapsed_ms,
        )
        self._emit_metrics(len(data), images, elapsed_ms)
        return output

    def preprocess(self, data: list[Any]) -> BatchState:
        """Parse and decode every request; a bad one is recorded, never raised.

        A typed error keeps its own status (4xx for bad input); any other exception while
        reading one request is logged with its traceback and fails that request alone with
        a 500, so it never takes the other requests of the batch down with it.
        """
        batch = BatchState()
        for idx, item in enumerate(data):
            try:
                parsed = parse_request(
                    item,
                    _content_type(self.context, idx),
                    max_images=self.settings.max_images_per_request,
                    max_image_bytes=self.settings.max_image_bytes,
                )
                arrays = decode_images(
                    parsed,
                    max_pixels=self.settings.max_pixels,
                    max_image_bytes=self.settings.max_image_bytes,
                    max_request_pixels=self.settings.max_request_pixels,
                )
            except KplateError as exc:
                logger.info("request %d rejected (%d): %s", idx, exc.http_status, exc)
                self._fail(batch, idx, exc)
                continue
            except Exception as exc:  # one request's failure must stay its own
                logger.exception("request %d failed while it was read", idx)
                self._fail(
                    batch,
                    idx,
                    UnexpectedError(
                        f"internal error while reading this request: {type(exc).__name__}"
                    ),
                )
                continue
            batch.parsed.append(parsed)
            batch.arrays.append(arrays)
        return batch

    @staticmethod
    def _fail(batch: BatchState, idx: int, exc: KplateError) -> None:
        batch.errors[idx] = exc
        batch.parsed.append(None)
        batch.arrays.append([])

    def inference(self, batch: BatchState, *args: Any, **kwargs: Any) -> BatchState:
        """Recognise the images of all good requests in one engine call."""
        owners = [idx for idx, arrays in enumerate(batch.arrays) for _ in arrays]
        images = [a for arrays in batch.arrays for a in arrays]
        if not images:
            return batch
        with torch.inference_mode():
            try:
                results = self.recognizer.recognize(images)
            except ENGINE_ERRORS:
                logger.warning(
                    "batch recognition failed; retrying request by request", exc_info=True
                )
                return self._inference_one_by_one(batch)
        if len(results) != len(images):
            raise RuntimeError(f"engine returned {len(results)} results for {len(images)} images")
        # No zip(strict=True): the archive must run on Python 3.9; lengths are checked above.
        for idx, plates in zip(owners, results):
            batch.plates.setdefault(idx, []).append([p.to_dict() for p in plates])
        return batch

    def _inference_one_by_one(self, batch: BatchState) -> BatchState:
        for idx, arrays in enumerate(batch.arrays):
            if not arrays:
                continue
            try:
                with torch.inference_mode():
                    results = self.recognizer.recognize(arrays)
            except KplateError as exc:
                logger.warning("request %d failed in the engine: %s", idx, exc)
                batch.errors[idx] = exc
                continue
            except (RuntimeError, ValueError) as exc:
                logger.exception("request %d failed in the engine", idx)
                batch.errors[idx] = EngineError(f"recognition failed on this request: {exc}")
                continue
            batch.plates[idx] = [[p.to_dict() for p in plates] for plates in results]
        return batch

    def postprocess(self, batch: BatchState) -> list[bytes]:
        """Build each request's body and set its content type and status code."""
        output = []
        for idx, parsed in enumerate(batch.parsed):
            self.context.set_response_content_type(idx, JSON_CONTENT_TYPE)
            error = batch.errors.get(idx)
            if error is not None or parsed is None:
                exc = error or KplateError("request was not processed")
                status = int(exc.http_status)
                self.context.set_response_status(code=status, phrase=_phrase(status), idx=idx)
                output.append(encode_json(error_body(exc)))
                continue
            body = build_response(
                parsed,
                batch.plates.get(idx, []),
                model_name=self.model_name,
                output_name=self.settings.output_name,
                fallback_id=self.context.get_request_id(idx),
            )
            output.append(encode_json(body))
        return output

    def _emit_metrics(self, requests: int, images: int, elapsed_ms: float) -> None:
        metrics = getattr(self.context, "metrics", None)
        if metrics is None:
            return
        metrics.add_counter("KplateBatches", 1, None)
        metrics.add_counter("KplateBatchedRequests", requests, None)
        metrics.add_counter("KplateImages", images, None)
        metrics.add_time("KplateHandleTime", round(elapsed_ms, 2), None, "ms")


def select_device(gpu_id: Any) -> torch.device:
    """``cuda:<gpu_id>`` when TorchServe assigned a GPU and CUDA is usable, else CPU."""
    if gpu_id is not None and str(gpu_id) != "" and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")


def _content_type(context: Any, idx: int) -> str | None:
    """The content type of request ``idx``: the body part's own, else the request header."""
    part = context.get_request_header(idx, "body")
    if isinstance(part, dict) and part.get("content-type"):
        return str(part["content-type"])
    for key in ("Content-Type", "content-type"):
        value = context.get_request_header(idx, key)
        if isinstance(value, str) and value:
            return value
    return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
