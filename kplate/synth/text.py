"""Random plate texts that follow the real rules (type-number ranges, use characters, regions)."""

from __future__ import annotations

import numpy as np

from kplate import plates
from kplate.plates import PlateText

#: Share of plates whose use syllable is outside the current rules (older vehicles).
UNUSUAL_SHARE = 0.03


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(int(d)) for d in rng.integers(0, 10, size=n))


def type_number(rng: np.random.Generator, digits: int, kind: str) -> str:
    """A type number of ``digits`` digits for a vehicle ``kind``.

    ``kind`` is ``passenger``, ``van``, ``truck``, ``special``, ``emergency`` or ``any``.
    """
    if digits == 2:
        ranges = {
            "passenger": (1, 69),
            "van": (70, 79),
            "truck": (80, 97),
            "special": (98, 99),
            "emergency": (98, 99),
        }
    elif digits == 3:
        ranges = {
            "passenger": (100, 699),
            "van": (700, 799),
            "truck": (800, 979),
            "special": (980, 997),
            "emergency": (998, 999),
        }
    else:
        raise ValueError(f"type numbers have 2 or 3 digits, not {digits}")
    if kind == "any":
        lo, hi = (1, 99) if digits == 2 else (100, 999)
    else:
        lo, hi = ranges[kind]
    return str(int(rng.integers(lo, hi + 1))).zfill(digits)


def use_char(rng: np.random.Generator, use: str) -> str:
    """A use syllable for ``use`` (or any legal one for ``any``); rarely an unusual one."""
    if rng.random() < UNUSUAL_SHARE:
        return str(rng.choice(plates.UNUSUAL_USE_CHARS))
    if use == "any":
        chars: tuple[str, ...] = tuple(plates.USE_OF_CHAR)
    else:
        chars = plates.USE_CHARS[use]
    return str(rng.choice(chars))


def random_text(
    rng: np.random.Generator,
    *,
    digits: int,
    region: bool,
    commercial: bool,
) -> PlateText:
    """Draw a plate text.

    Args:
        rng: the random generator.
        digits: 2 or 3 digits in the type number.
        region: whether the plate carries a region name.
        commercial: draw a commercial use syllable (아 바 사 자, or 배) instead of a
            private/rental/military one.
    """
    kind = str(rng.choice(["passenger", "passenger", "passenger", "van", "truck", "special"]))
    if digits == 3 and rng.random() < 0.02:
        kind = "emergency"
    tn = type_number(rng, digits, kind)
    if commercial:
        uc = use_char(rng, "delivery" if rng.random() < 0.1 else "commercial")
    else:
        r = rng.random()
        use = "private" if r < 0.8 else ("rental" if r < 0.95 else "military")
        uc = use_char(rng, use)
    reg = str(rng.choice(plates.REGIONS)) if region else None
    serial = _digits(rng, 4)
    text = f"{reg or ''}{tn}{uc}{serial}"
    return PlateText(text=text, region=reg, type_number=tn, use_char=uc, serial=serial)
