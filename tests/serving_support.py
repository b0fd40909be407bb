"""Shared helpers of the serving tests: small test images, payload builders, engine probe."""

from __future__ import annotations

import base64
import importlib.util
import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tools import ROOT as REPO_ROOT

# The serving code (handler/, request/) is not an installed package: make the checkout
# importable, whatever directory pytest was started from.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
WEIGHTS_DIR = REPO_ROOT / "kplate" / "weights"
SAMPLES_DIR = REPO_ROOT / "request" / "samples"
#: Keys of one plate in a response (DOMAIN.md).
PLATE_KEYS = {
    "text",
    "layout",
    "color",
    "region",
    "type_number",
    "type_code",
    "use_char",
    "use",
    "serial",
    "box",
    "width",
    "height",
    "corners",
    "score",
    "text_score",
    "valid",
}


def jpeg_bytes(width: int = 160, height: int = 120, seed: int = 0, quality: int = 85) -> bytes:
    """A small JPEG: noise with a white bar, enough for the engine to run on."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    pixels[height // 3 : height // 2, width // 4 : 3 * width // 4] = 255
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(width: int, height: int) -> bytes:
    """A flat PNG of any size (compresses to almost nothing: the decompression-bomb case)."""
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    """Base64 text of ``data``."""
    return base64.b64encode(data).decode("ascii")


def sample_images() -> list[Path]:
    """The committed request samples, else an empty list."""
    return sorted(SAMPLES_DIR.glob("*.jpg"))


def engine_ready() -> bool:
    """True when ``kplate.Recognizer`` and its shipped weights exist."""
    if importlib.util.find_spec("kplate.recognizer") is None:
        return False
    return all((WEIGHTS_DIR / name).is_file() for name in ("detector.pt", "reader.pt"))


requires_engine = pytest.mark.skipif(
    not engine_ready(), reason="kplate.recognizer or the shipped weights are not there yet"
)


def assert_plate_list(plates: object) -> None:
    """``plates`` is a list of DOMAIN.md plate dicts (possibly empty, never a string)."""
    assert isinstance(plates, list), plates
    for plate in plates:
        assert isinstance(plate, dict)
        assert set(plate) == PLATE_KEYS, set(plate) ^ PLATE_KEYS
        assert len(plate["box"]) == 4
        assert len(plate["corners"]) == 4


@contextmanager
def http_stand_in(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """A stdlib HTTP server with ``handler`` on a free loopback port, served from a thread for
    the duration of the block (stand-ins for the servers a client or a front calls)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
