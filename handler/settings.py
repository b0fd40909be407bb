"""Handler settings: the ``handler:`` section of ``model-config.yaml``, validated by pydantic.

TorchServe reads ``model-config.yaml`` from the .mar (``torch-model-archiver --config-file``)
and hands it to the handler as ``context.model_yaml_config``. Top-level keys belong to
TorchServe; the handler owns only the ``handler:`` section, where a typo fails loudly
(``extra="forbid"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kplate.errors import ConfigError

#: 8 MiB: a 6 MB base64 request carries a ~4.5 MB image; raw uploads may be larger.
DEFAULT_MAX_IMAGE_BYTES = 8 * 1024 * 1024
#: 40 MP: a 12 MP phone photo passes, a decompression bomb does not.
DEFAULT_MAX_PIXELS = 40_000_000
#: 48 MP for all images of one request together: four 12 MP phone photos pass; sixteen
#: highly compressible 40 MP PNGs (a 3 MB request) no longer decode to 1.9 GB of pixels.
DEFAULT_MAX_REQUEST_PIXELS = 48_000_000


class HandlerSettings(BaseModel):
    """Settings of :class:`handler.kplate_handler.KplateHandler`.

    Attributes:
        max_images_per_request: images one request may carry (413 above).
        max_image_bytes: encoded size limit of one image (413 above).
        max_pixels: pixel limit of one decoded image, the decompression-bomb guard (413 above).
        max_request_pixels: pixel limit of all decoded images of one request together,
            checked from the image headers before anything is decoded (413 above).
        torch_threads: intra-op threads of the worker; ``None`` keeps torch's default.
        weights_dir: weights folder relative to the model directory; ``None`` uses the
            weights shipped inside the ``kplate`` package copy.
        warmup: run one recognition on a blank image at load, so the first request is not slow.
        output_name: name of the v2 output tensor.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_images_per_request: int = Field(default=16, ge=1, le=256)
    max_image_bytes: int = Field(default=DEFAULT_MAX_IMAGE_BYTES, ge=1024)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=64 * 64)
    max_request_pixels: int = Field(default=DEFAULT_MAX_REQUEST_PIXELS, ge=64 * 64)
    # Optional[...], not "X | None": pydantic evaluates these at runtime, and the
    # torchserve-kfs image runs Python 3.9 (the modules shipped in the .mar must import there).
    torch_threads: Optional[int] = Field(default=None, ge=1, le=256)  # noqa: UP045
    weights_dir: Optional[str] = None  # noqa: UP045
    warmup: bool = True
    output_name: str = Field(default="plates", min_length=1)


def load_settings(model_yaml_config: Mapping[str, Any] | None) -> HandlerSettings:
    """Validate the ``handler:`` section of a parsed ``model-config.yaml``.

    Args:
        model_yaml_config: the whole parsed YAML (``context.model_yaml_config``); ``None`` or a
            missing section gives the defaults.

    Returns:
        The validated settings.

    Raises:
        ConfigError: the section is not a mapping or holds an unknown key or a bad value.
    """
    section: Any = (model_yaml_config or {}).get("handler") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(
            f"model-config.yaml: 'handler' must be a mapping, got {type(section).__name__}"
        )
    try:
        return HandlerSettings.model_validate(dict(section))
    except ValidationError as exc:
        raise ConfigError(f"model-config.yaml: invalid 'handler' section: {exc}") from exc
