"""Korean licence-plate domain rules: parts of a plate string, vehicle kinds, uses, validity.

Pure functions only; no model, no I/O. The facts come from ``DOMAIN.md``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

REGIONS: tuple[str, ...] = (
    "서울",
    "부산",
    "대구",
    "인천",
    "광주",
    "대전",
    "울산",
    "세종",
    "경기",
    "강원",
    "충북",
    "충남",
    "전북",
    "전남",
    "경북",
    "경남",
    "제주",
)

USE_CHARS: dict[str, tuple[str, ...]] = {
    "private": tuple("가나다라마거너더러머버서어저고노도로모보소오조구누두루무부수우주"),
    "commercial": tuple("아바사자"),
    "delivery": ("배",),
    "rental": tuple("하허호"),
    "military": tuple("육해공국합"),
}
#: Syllables seen on older real plates that are not in the current rules (read, use "unknown").
UNUSUAL_USE_CHARS: tuple[str, ...] = tuple("리미비시이지기니디히")

USE_OF_CHAR: dict[str, str] = {ch: use for use, chars in USE_CHARS.items() for ch in chars}
ALL_USE_CHARS: tuple[str, ...] = tuple(USE_OF_CHAR) + UNUSUAL_USE_CHARS

Layout = Literal["one-line", "two-line"]
Color = Literal["white", "green", "yellow", "blue", "orange"]
LAYOUTS: tuple[str, ...] = ("one-line", "two-line")
COLORS: tuple[str, ...] = ("white", "green", "yellow", "blue", "orange")

_HANGUL = "\uac00-\ud7a3"
_PLATE_RE = re.compile(
    rf"^(?P<region>[{_HANGUL}]{{2}})?(?P<type>[0-9]{{2,3}})(?P<use>[{_HANGUL}])(?P<serial>[0-9]{{4}})$"
)


@dataclass(frozen=True)
class PlateText:
    """The parts of a plate string.

    Attributes:
        text: the full string without spaces, e.g. ``"서울12가3456"``.
        region: two-syllable region name or ``None``.
        type_number: the 2- or 3-digit vehicle type number.
        use_char: the Hangul use syllable.
        serial: the 4-digit serial.
    """

    text: str
    region: str | None
    type_number: str
    use_char: str
    serial: str

    @property
    def vehicle_type(self) -> str:
        """Vehicle kind derived from the type number."""
        return vehicle_type(self.type_number)

    @property
    def use(self) -> str:
        """Use derived from the Hangul syllable."""
        return use_of(self.use_char)

    @property
    def valid(self) -> bool:
        """True when every part follows the legal Korean pattern."""
        return is_valid(self.text)


def normalize(text: str) -> str:
    """Remove whitespace and separators a person or label file may insert, with full-width
    digits and other compatibility characters in their plain form (NFKC; Hangul syllables
    are unchanged)."""
    return re.sub(r"[\s\-·.]", "", unicodedata.normalize("NFKC", text))


def parse(text: str) -> PlateText | None:
    """Split a plate string into its parts; ``None`` when it does not have the plate shape.

    The shape check is structural (optional 2-syllable prefix, 2-3 digits, one syllable,
    4 digits); :func:`is_valid` adds the legal-value checks.
    """
    t = normalize(text)
    m = _PLATE_RE.match(t)
    if m is None:
        return None
    return PlateText(
        text=t,
        region=m.group("region"),
        type_number=m.group("type"),
        use_char=m.group("use"),
        serial=m.group("serial"),
    )


def vehicle_type(type_number: str) -> str:
    """Map a type number to ``passenger|van|truck|special|emergency`` (``unknown`` if malformed)."""
    if re.fullmatch("[0-9]{2,3}", type_number) is None:
        return "unknown"
    n = int(type_number)
    table: tuple[tuple[int, str], ...]
    if len(type_number) == 2:
        table = ((0, "unknown"), (69, "passenger"), (79, "van"), (97, "truck"), (99, "special"))
    else:
        table = (
            (99, "unknown"),
            (699, "passenger"),
            (799, "van"),
            (979, "truck"),
            (997, "special"),
            (999, "emergency"),
        )
    for upper, kind in table:
        if n <= upper:
            return kind
    return "unknown"


def use_of(use_char: str) -> str:
    """Map a Hangul use syllable to its use; unknown syllables give ``"unknown"``."""
    return USE_OF_CHAR.get(use_char, "unknown")


def is_valid(text: str) -> bool:
    """True when ``text`` is a legal Korean plate string.

    Legal: optional known region, a 2-digit type number (01-99) or a 3-digit one (100-999),
    a use syllable from the current rules, and a 4-digit serial.
    """
    p = parse(text)
    if p is None:
        return False
    if p.region is not None and p.region not in REGIONS:
        return False
    if p.use_char not in USE_OF_CHAR:
        return False
    if len(p.type_number) == 2:
        return p.type_number != "00"
    return p.type_number[0] != "0"


def color_name(label: str) -> str:
    """Map a colour label as written in data sets (``old-green``, ``ev-blue``,
    ``orange(construction)``) to one of :data:`COLORS`; unknown labels pass through."""
    low = label.lower()
    for c in COLORS:
        if c in low:
            return c
    return low


def layout_name(label: str) -> str:
    """Map ``1-line``/``2-line``/``one-line``/``two-line`` to :data:`LAYOUTS` names."""
    low = label.lower()
    if low.startswith(("1", "one")):
        return "one-line"
    if low.startswith(("2", "two")):
        return "two-line"
    return low
