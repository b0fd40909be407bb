"""Typed, frozen results returned by the engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kplate import plates

Point = tuple[float, float]


def hull(corners: Sequence[Point]) -> tuple[float, float, float, float]:
    """Axis-aligned hull ``(x1, y1, x2, y2)`` of a plate's corners."""
    xs = [p[0] for p in corners]
    ys = [p[1] for p in corners]
    return (min(xs), min(ys), max(xs), max(ys))


@dataclass(frozen=True)
class Detection:
    """One plate found by the detector, in original-image pixels.

    Attributes:
        corners: 4 points clockwise from top-left.
        score: detection confidence in [0, 1].
        layout: ``one-line`` or ``two-line``.
        color: one of :data:`kplate.plates.COLORS`.
    """

    corners: tuple[Point, Point, Point, Point]
    score: float
    layout: str
    color: str

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Axis-aligned hull of the corners as ``(x1, y1, x2, y2)``."""
        return hull(self.corners)


@dataclass(frozen=True)
class Reading:
    """The reader's output for one rectified plate crop."""

    text: str
    score: float


@dataclass(frozen=True)
class Plate:
    """A recognised plate: detection, text and the structure derived from the text."""

    text: str
    layout: str
    color: str
    region: str | None
    type_number: str | None
    use_char: str | None
    serial: str | None
    corners: tuple[Point, Point, Point, Point]
    score: float
    text_score: float
    image_size: tuple[int, int] | None = None  # (width, height): the box is clipped to it

    @classmethod
    def from_parts(
        cls, detection: Detection, reading: Reading, image_size: tuple[int, int] | None = None
    ) -> Plate:
        """Combine a detection and a reading, splitting the text into its parts; the plate
        lies in an image of ``image_size`` ``(width, height)`` when given."""
        parts = plates.parse(reading.text)
        return cls(
            text=reading.text,
            layout=detection.layout,
            color=detection.color,
            region=parts.region if parts else None,
            type_number=parts.type_number if parts else None,
            use_char=parts.use_char if parts else None,
            serial=parts.serial if parts else None,
            corners=detection.corners,
            score=detection.score,
            text_score=reading.score,
            image_size=image_size,
        )

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Axis-aligned hull of the corners as ``(x1, y1, x2, y2)``, clipped to the image when
        its size is known: a plate cut by the frame has corners outside the image (they are
        the whole plate's), but its box is the part of it in the image."""
        x1, y1, x2, y2 = hull(self.corners)
        if self.image_size is None:
            return (x1, y1, x2, y2)
        w, h = self.image_size
        return (
            min(max(x1, 0.0), w),
            min(max(y1, 0.0), h),
            min(max(x2, 0.0), w),
            min(max(y2, 0.0), h),
        )

    @property
    def type_code(self) -> str | None:
        """Vehicle kind from the type number (``passenger``, ``van``, ...)."""
        return plates.vehicle_type(self.type_number) if self.type_number else None

    @property
    def use(self) -> str | None:
        """Use from the Hangul syllable (``private``, ``commercial``, ...)."""
        return plates.use_of(self.use_char) if self.use_char else None

    @property
    def valid(self) -> bool:
        """True when the text matches a legal Korean pattern."""
        return plates.is_valid(self.text)

    def to_dict(self) -> dict[str, Any]:
        """The result format of DOMAIN.md, JSON-serialisable."""
        x1, y1, x2, y2 = self.box
        return {
            "text": self.text,
            "layout": self.layout,
            "color": self.color,
            "region": self.region,
            "type_number": self.type_number,
            "type_code": self.type_code,
            "use_char": self.use_char,
            "use": self.use,
            "serial": self.serial,
            "box": [round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)],
            "width": round(x2 - x1, 1),
            "height": round(y2 - y1, 1),
            "corners": [[round(x, 1), round(y, 1)] for x, y in self.corners],
            "score": round(self.score, 4),
            "text_score": round(self.text_score, 4),
            "valid": self.valid,
        }
