"""kplate: Korean licence-plate recognition.

``kplate.Recognizer`` is the engine (detector + reader); ``kplate.synth`` renders the
synthetic training data; ``kplate.plates`` holds the domain rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kplate.result import Detection, Plate, Reading

__version__ = "0.1.0"
__all__ = ["Detection", "Plate", "Reading", "Recognizer", "__version__"]

if TYPE_CHECKING:
    from kplate.recognizer import Recognizer


def __getattr__(name: str) -> Any:
    # The recognizer pulls in torch; import it only when asked for.
    if name == "Recognizer":
        from kplate.recognizer import Recognizer

        return Recognizer
    raise AttributeError(f"module 'kplate' has no attribute {name!r}")
