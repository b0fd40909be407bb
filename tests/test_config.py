from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kplate.config import CONFIG_DIR, EngineConfig, load_config
from kplate.errors import ConfigError


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.reader.alphabet[0] == "_"
    assert len(set(cfg.reader.alphabet)) == len(cfg.reader.alphabet)


def test_unknown_key_fails(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("detector:\n  scor_threshold: 0.5\n")
    with pytest.raises(ConfigError, match="scor_threshold"):
        load_config(p)


@pytest.mark.parametrize(
    "text", ["reader:\n  height: 63\n", "detector:\n  infer_long_sides: [640, 0]\n"]
)
def test_bad_value_fails(tmp_path: Path, text: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=text.split(":")[1].strip()):
        load_config(p)


def test_missing_file_fails(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_updated_changes_only_the_named_fields_and_validates() -> None:
    cfg = load_config()
    new = cfg.updated(detector={"score_threshold": 0.6}, reader={"cuts": [(0, 0, 0, 0)]})
    assert new.detector.score_threshold == 0.6 and new.reader.cuts == ((0, 0, 0, 0),)
    assert new.detector.model_copy(update={"score_threshold": 0.4}) == cfg.detector
    assert cfg.updated() == cfg and cfg.detector.score_threshold == 0.4  # cfg itself unchanged
    with pytest.raises(ValidationError, match="score_threshold"):
        cfg.updated(detector={"score_threshold": 1.5})
    with pytest.raises(ValidationError, match="score_threshold"):
        cfg.updated(detector={"score_threshold": 0.0})  # every box of the map a plate
    with pytest.raises(ValidationError, match="cut_margin"):
        cfg.updated(reader={"cut_margin": 0.1})  # a typo is refused, not ignored


def test_readers_are_named_and_at_least_one() -> None:
    cfg = EngineConfig()  # the defaults: the reader alone reads photos (engine.yaml differs)
    assert cfg.reader.read_with == ("reader",) and cfg.reader.crop_read_with == ("crop_reader",)
    both = cfg.updated(reader={"read_with": ["reader", "crop_reader"]}).reader.read_with
    assert both == ("reader", "crop_reader")
    with pytest.raises(ValidationError, match="read_with"):
        cfg.updated(reader={"read_with": ["crop-reader"]})
    with pytest.raises(ValidationError, match="crop_read_with"):
        cfg.updated(reader={"crop_read_with": []})
    assert cfg.reader.judge_with is None  # the readers of read_with judge
    with pytest.raises(ValidationError, match="judge_with"):
        cfg.updated(reader={"judge_with": []})
    with pytest.raises(ValidationError, match="second_opinion_below needs judge_with"):
        cfg.updated(reader={"second_opinion_below": 0.5})
    with pytest.raises(ValidationError, match="second_opinion_below"):
        cfg.updated(reader={"judge_with": ["reader"], "second_opinion_below": 0.0})
