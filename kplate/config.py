"""Engine configuration, validated with pydantic (``extra="forbid"``: a typo fails loudly)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kplate import plates
from kplate.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "engine.yaml"

#: The reader weights a plate can be read with (``reader.pt``, ``crop_reader.pt``).
ReaderName = Literal["reader", "crop_reader"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectorConfig(_Strict):
    """Plate detector: channels, sizes and decoding thresholds."""

    width: tuple[int, int, int, int, int] = (16, 24, 48, 80, 128)
    head_channels: int = Field(48, ge=8)
    train_size: int = Field(256, ge=64, multiple_of=32)
    #: Inference resizes the longer side to each of these and merges the detections: the
    #: detector saw plates of at most ~150 px in training, so large plates are found at the
    #: smaller scale and small ones at the larger.
    infer_long_sides: tuple[Annotated[int, Field(ge=32)], ...] = Field((640, 320), min_length=1)
    score_threshold: float = Field(0.4, gt=0, lt=1)
    nms_iou: float = Field(0.4, gt=0, le=1)
    max_plates: int = Field(16, ge=1)
    #: Second look: each detection is cut out of the original image with its surroundings,
    #: scaled so the plate is ``refine_width`` px wide (a size the detector saw often in
    #: training) on a ``refine_canvas`` of (width, height), and detected again; the corners
    #: move toward the ones found there (``refine_blend``). ``null``: no second look.
    refine_width: int | None = Field(64, ge=16)
    refine_canvas: tuple[int, int] = (128, 96)
    #: Heatmap threshold of the second look; a peak within box IoU 0.5 of the first quad
    #: confirms the detection.
    refine_min_score: float = Field(0.2, gt=0, lt=1)
    #: Drop detections the second look does not confirm (else keep their first corners).
    refine_drop: bool = True
    #: A confirmed detection's corners: this share of the second look's plus the rest of
    #: the first look's (1: the second look's alone).
    refine_blend: float = Field(0.5, ge=0, le=1)
    #: The same look for crops given to :meth:`Recognizer.read`, which are often loose
    #: (an upright box around a tilted plate): the plate is looked for in the whole crop,
    #: zoomed to ``crop_refine_width`` px on ``crop_refine_canvas``, and the crop's cuts move
    #: ``crop_refine_blend`` of the way to the corners found (a crop where none is found is
    #: read as given). ``null``: crops are read as given.
    crop_refine_width: int | None = Field(96, ge=16)
    crop_refine_canvas: tuple[int, int] = (192, 160)
    crop_refine_blend: float = Field(0.5, ge=0, le=1)

    @field_validator("refine_canvas", "crop_refine_canvas")
    @classmethod
    def _canvas_fits_stride(cls, v: tuple[int, int]) -> tuple[int, int]:
        if any(d < 32 or d % 32 for d in v):
            raise ValueError(f"canvas sides must be multiples of 32, got {v}")
        return v


class ReaderConfig(_Strict):
    """Plate reader: input size, width multiplier, maximum text length."""

    height: int = Field(64, ge=16, multiple_of=8)
    width: int = Field(160, ge=32, multiple_of=8)
    width_mult: float = Field(1.0, gt=0)
    max_len: int = Field(10, ge=7)
    min_text_score: float = Field(0.0, ge=0, le=1)
    #: Drop detections whose reading does not have the shape of a plate string (digits,
    #: Hangul, digits); removes signs and other text the detector mistook for plates.
    require_plate_shape: bool = True
    #: When the per-slot best characters do not form a plate string, take the most probable
    #: plate-shaped string instead if its least certain slot has at least this probability
    #: (``null``: never; the reading is then dropped as not plate-shaped).
    repair_min_score: float | None = Field(None, ge=0, le=1)
    #: The same floor for crops given to :meth:`Recognizer.read`. The caller says each one is
    #: a plate, so there is no false detection to turn away: at 0 a plate is always read as
    #: its most probable plate-shaped string, and its text score says how sure that is.
    crop_repair_min_score: float | None = Field(0.0, ge=0, le=1)
    #: A detected plate is read from each of these cuts, ``(left, top, right, bottom)``
    #: margins in fractions of the plate's width and height (negative: cut in), and the
    #: slot probabilities are averaged: a second, wider cut makes up for corners set a
    #: little inside the plate.
    cuts: tuple[tuple[float, float, float, float], ...] = Field(
        ((0.0, 0.0, 0.0, 0.0), (0.04, 0.07, 0.04, 0.07)), min_length=1
    )
    #: The same for crops given to :meth:`Recognizer.read`, as margins of the whole crop:
    #: by default as given and shifted 2% of its width either way, since a crop's edges
    #: are where someone else put them.
    crop_cuts: tuple[tuple[float, float, float, float], ...] = Field(
        ((0.0, 0.0, 0.0, 0.0), (0.02, 0.0, -0.02, 0.0), (-0.02, 0.0, 0.02, 0.0)), min_length=1
    )
    #: The weights whose slot probabilities are averaged (over every cut) for a detected
    #: plate: ``reader`` is ``reader.pt``, ``crop_reader`` is ``crop_reader.pt`` (the reader
    #: when the weights have none).
    read_with: tuple[ReaderName, ...] = Field(("reader",), min_length=1)
    #: The weights whose mean reading must be kept (:attr:`require_plate_shape` and
    #: :attr:`min_text_score`) for a detection to be returned (``null``: those of
    #: ``read_with``). ``crop_reader.pt`` has never seen a cut without a plate, so it
    #: should not judge whether there is one.
    judge_with: tuple[ReaderName, ...] | None = Field(None, min_length=1)
    #: When set (with ``judge_with``), a detected plate is read by the weights of
    #: ``judge_with`` alone, and by the mean of ``read_with`` only when that reading is kept
    #: and its score is below this: the other weights run on the plates their judges are
    #: unsure of, not on every plate. ``null``: every plate is read with ``read_with``.
    second_opinion_below: float | None = Field(None, gt=0, le=1)
    #: The same as ``read_with`` for crops given to :meth:`Recognizer.read`.
    crop_read_with: tuple[ReaderName, ...] = Field(("crop_reader",), min_length=1)

    @model_validator(mode="after")
    def _second_opinion_needs_judges(self) -> ReaderConfig:
        if self.second_opinion_below is not None and self.judge_with is None:
            raise ValueError(
                "second_opinion_below needs judge_with: the plates are first read with "
                "judge_with's weights, then with read_with's where those are unsure"
            )
        return self

    @property
    def photo_readers(self) -> frozenset[ReaderName]:
        """The weights a detected plate is read or judged with (``read_with`` and
        ``judge_with``): those a model that reads whole photos needs."""
        return frozenset((*self.read_with, *(self.judge_with or ())))

    @cached_property
    def alphabet(self) -> str:
        """Index 0 is the padding symbol; then digits, then every Hangul syllable used."""
        hangul = sorted({ch for r in plates.REGIONS for ch in r} | set(plates.ALL_USE_CHARS))
        return "_" + "0123456789" + "".join(hangul)


class EngineConfig(_Strict):
    """The whole engine configuration (``kplate/configs/engine.yaml``)."""

    detector: DetectorConfig = DetectorConfig()
    reader: ReaderConfig = ReaderConfig()

    def updated(
        self,
        detector: Mapping[str, Any] | None = None,
        reader: Mapping[str, Any] | None = None,
    ) -> EngineConfig:
        """This config with some ``detector`` and ``reader`` fields changed, validated as a
        config file's would be (``model_copy(update=...)`` would skip validation).

        Raises:
            pydantic.ValidationError: a field is unknown or a value out of its range.
        """
        data = self.model_dump()
        data["detector"].update(detector or {})
        data["reader"].update(reader or {})
        return EngineConfig.model_validate(data)


def load_config(path: Path | None = None) -> EngineConfig:
    """Load and validate an engine config YAML.

    Raises:
        ConfigError: the file is missing, not YAML, or has unknown or invalid keys.
    """
    p = path or DEFAULT_CONFIG
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {p}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
    try:
        return EngineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
