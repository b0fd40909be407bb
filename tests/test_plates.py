from __future__ import annotations

import pytest

from kplate import plates


@pytest.mark.parametrize(
    ("text", "region", "tn", "uc", "serial"),
    [
        ("12가3456", None, "12", "가", "3456"),
        ("123가4567", None, "123", "가", "4567"),
        ("서울12가3456", "서울", "12", "가", "3456"),
        ("경기71아1448", "경기", "71", "아", "1448"),
        ("경기 71아 1448", "경기", "71", "아", "1448"),
    ],
)
def test_parse_splits_parts(text: str, region: str | None, tn: str, uc: str, serial: str) -> None:
    p = plates.parse(text)
    assert p is not None
    assert (p.region, p.type_number, p.use_char, p.serial) == (region, tn, uc, serial)
    assert p.text == text.replace(" ", "")


@pytest.mark.parametrize(
    "text", ["", "1234", "12가345", "1가3456", "1234가3456", "12a3456", "서12가3456"]
)
def test_parse_rejects_non_plates(text: str) -> None:
    assert plates.parse(text) is None


def test_only_ascii_digits_are_digits_and_full_width_ones_are_normalised() -> None:
    assert plates.parse("\u0661\u0662\uac00\u0663\u0664\u0665\u0666") is None  # Arabic-Indic
    full_width = plates.parse("서울 １２가 ３４５６")
    assert full_width is not None and full_width.text == "서울12가3456"
    assert plates.is_valid("１２가３４５６")


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("12가3456", True),
        ("123호4567", True),
        ("서울74사9728", True),
        ("00가1234", False),  # no type number 00
        ("012가1234", False),  # 3-digit numbers start at 100
        ("12리3456", False),  # old syllable: read but not legal now
        ("평양12가3456", False),  # not a region
    ],
)
def test_is_valid(text: str, valid: bool) -> None:
    assert plates.is_valid(text) is valid


@pytest.mark.parametrize(
    ("tn", "kind"),
    [
        ("01", "passenger"),
        ("69", "passenger"),
        ("70", "van"),
        ("79", "van"),
        ("80", "truck"),
        ("97", "truck"),
        ("98", "special"),
        ("100", "passenger"),
        ("699", "passenger"),
        ("700", "van"),
        ("799", "van"),
        ("979", "truck"),
        ("980", "special"),
        ("997", "special"),
        ("998", "emergency"),
        ("1", "unknown"),
        ("ab", "unknown"),
        ("00", "unknown"),  # 2-digit numbers start at 01
        ("099", "unknown"),
        ("\u0661\u0662", "unknown"),  # digits, but not ASCII ones
    ],
)
def test_vehicle_type(tn: str, kind: str) -> None:
    assert plates.vehicle_type(tn) == kind


@pytest.mark.parametrize(
    ("ch", "use"),
    [
        ("가", "private"),
        ("아", "commercial"),
        ("바", "commercial"),
        ("사", "commercial"),
        ("자", "commercial"),
        ("배", "delivery"),
        ("허", "rental"),
        ("육", "military"),
        ("리", "unknown"),
    ],
)
def test_use_of(ch: str, use: str) -> None:
    assert plates.use_of(ch) == use


def test_every_region_is_a_valid_plates_region() -> None:
    assert len(set(plates.REGIONS)) == 17
    for region in plates.REGIONS:
        assert plates.is_valid(f"{region}12가3456"), region


def test_hyphens_dots_and_spaces_between_parts_are_separators() -> None:
    for written in ("12가-3456", "12가 3456", "12가·3456", "12가.3456"):
        parsed = plates.parse(written)
        assert parsed is not None and parsed.text == "12가3456", written


def test_label_names_normalise() -> None:
    assert plates.layout_name("1-line") == "one-line"
    assert plates.layout_name("2-line") == "two-line"
    assert plates.color_name("old-green") == "green"
    assert plates.color_name("ev-blue") == "blue"
    assert plates.color_name("orange(construction)") == "orange"
