"""The fleet config: the shipped file, overrides, and one clear message for each kind of mistake."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from dagster._core.definitions.partitions.utils.base import INVALID_PARTITION_SUBSTRINGS
from dagster._core.definitions.partitions.utils.multi import INVALID_STATIC_PARTITIONS_KEY_CHARACTERS

from data_engine.config import ConfigError, load_fleet_config
from data_engine.config.models import MODEL_KEY
from data_engine_tests.conftest import TEST_FLEET


def test_shipped_config_has_the_four_models():
    config = load_fleet_config()
    assert list(config.models) == ["municipals", "CnD", "Covant", "ENS"]
    municipals = config.models["municipals"]
    assert [f.kind for f in municipals.selection.filters] == ["size_class", "class_overlap", "confidence_band", "empty_frames"]
    assert municipals.cameras == ["cam-01", "cam-02", "cam-11", "cam-12", "cam-13"]


def test_data_engine_config_overrides_the_shipped_file(fleet_file, monkeypatch):
    monkeypatch.setenv("DATA_ENGINE_CONFIG", str(fleet_file))
    assert list(load_fleet_config().models) == ["municipals", "ENS"]


def test_no_accepted_model_key_holds_what_dagster_forbids_in_a_partition_key():
    for forbidden in [*INVALID_STATIC_PARTITIONS_KEY_CHARACTERS, *INVALID_PARTITION_SUBSTRINGS]:
        assert not MODEL_KEY.match(f"model{forbidden}key")


def _with(change) -> dict:
    fleet = copy.deepcopy(TEST_FLEET)
    change(fleet)
    return fleet


def _filters(fleet) -> list:
    return fleet["models"]["municipals"]["selection"]["filters"]


BAD_CONFIGS = {
    "demo rate above one": (
        lambda f: f.update(demo={"miss_rate": 1.5}),
        ["demo.miss_rate", "less than or equal to 1"],
    ),
    "unknown demo key": (
        lambda f: f.update(demo={"miss_rates": 0.1}),
        ["demo.miss_rates", "unknown key"],
    ),
    "unknown filter kind": (
        lambda f: _filters(f).append({"kind": "blurry"}),
        ["models.municipals.selection.filters[5]", "unknown filter kind 'blurry'"],
    ),
    "class the model lacks": (
        lambda f: _filters(f)[0].update(classes=["Banana"]),
        ["models.municipals", "selection.filters[0] (size_class)", "class 'Banana'"],
    ),
    "min_score above max_score": (
        lambda f: _filters(f)[2].update(min_score=0.8, max_score=0.2),
        ["models.municipals.selection.filters[2]", "min_score (0.8) is greater than max_score (0.2)"],
    ),
    "camera under two clients": (
        lambda f: f["models"]["municipals"]["clients"]["city_mrf"]["cameras"].append("cam-01"),
        ["models.municipals", "camera 'cam-01' is listed under two clients"],
    ),
    "invalid table identifier": (
        lambda f: f["warehouse"].update(predictions_table="inference.predictions; DROP TABLE x"),
        ["warehouse.predictions_table", "invalid table identifier"],
    ),
    "model key unusable as a partition key": (
        lambda f: f["models"].update({"bad|key": f["models"]["ENS"]}),
        ["model key 'bad|key' may contain only letters, digits, '_' and '-'", "rename the model"],
    ),
    # Once a path segment, `x/../municipals` wrote over municipals' outputs and labels.
    "model key climbing out of its folder": (
        lambda f: f["models"].update({"x/../municipals": f["models"]["ENS"]}),
        ["model key 'x/../municipals' may contain only letters, digits, '_' and '-'"],
    ),
    "model key starting with a dash": (
        lambda f: f["models"].update({"-ENS": f["models"]["ENS"]}),
        ["model key '-ENS' may contain only letters, digits, '_' and '-' (starting with a letter or digit"],
    ),
    "model key with a space": (
        lambda f: f["models"].update({"new model": f["models"]["ENS"]}),
        ["model key 'new model' may contain only"],
    ),
    "label prefix climbing out of the bucket's folder": (
        lambda f: f["models"]["ENS"].update(labels={"prefix": "labels/../../other"}),
        ["models.ENS.labels.prefix", "invalid prefix 'labels/../../other'", "no '.' or '..' segment"],
    ),
    "absolute label prefix": (
        lambda f: f["models"]["ENS"].update(labels={"prefix": "/etc"}),
        ["models.ENS.labels.prefix", "invalid prefix '/etc'"],
    ),
    "storage prefix with a parent segment": (
        lambda f: f["storage"].update(s3_prefix=".."),
        ["storage.s3_prefix", "invalid prefix '..'"],
    ),
    "filter scoped to an unknown camera": (
        lambda f: _filters(f)[1].update(cameras=["cam-99"]),
        ["selection.filters[1] (class_overlap)", "camera 'cam-99'"],
    ),
    "misspelt key": (
        lambda f: f["models"]["ENS"]["selection"].update(max_frame_per_day=3),
        ["models.ENS.selection.max_frame_per_day", "unknown key"],
    ),
    "class name with the pair separator": (
        lambda f: f["models"]["ENS"]["classes"].append("Glass|Jar"),
        ["models.ENS", "class 'Glass|Jar' contains '|'"],
    ),
    "class name of a re-review's prediction group": (
        lambda f: f["models"]["ENS"]["classes"].append("prediction:Glass"),
        ["models.ENS", "class 'prediction:Glass' starts with 'prediction:'"],
    ),
    "more filters than the bits of a frame's filter mask": (
        lambda f: _filters(f).extend(
            {"kind": "confidence_band", "name": f"band_{i}", "min_score": 0.1, "max_score": 0.2} for i in range(60)
        ),
        ["models.municipals.selection.filters", "at most 62 items"],
    ),
    "two filters with one name": (
        lambda f: _filters(f).append({"kind": "confidence_band", "min_score": 0.1, "max_score": 0.2}),
        ["duplicate filter name", "confidence_band"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_fails_at_load_naming_file_key_and_problem(case, tmp_path):
    change, expected = BAD_CONFIGS[case]
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(_with(change)))
    with pytest.raises(ConfigError) as raised:
        load_fleet_config(path)
    message = str(raised.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_malformed_yaml_and_missing_file_name_the_file(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match=f"{broken}: not valid YAML"):
        load_fleet_config(broken)
    with pytest.raises(ConfigError, match="file not found; set DATA_ENGINE_CONFIG"):
        load_fleet_config(tmp_path / "missing.yaml")


def test_model_keys_of_letters_digits_underscore_and_dash_load(tmp_path: Path):
    fleet = _with(lambda f: f["models"].update({"CnD_v2-night": f["models"]["ENS"]}))
    fleet["models"]["ENS"]["labels"] = {"prefix": "team-a/labels.v2"}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    config = load_fleet_config(path)
    assert "CnD_v2-night" in config.models
    assert config.models["ENS"].labels.prefix == "team-a/labels.v2"


def _fleet_text_with(duplicated_line: str, copy_from_line: bool = False) -> str:
    """The test fleet as YAML, with `duplicated_line` given again: the line alone, or (copy_from_line)
    the whole block from that line to the end, placed before the first `models:` entry."""
    text = yaml.safe_dump(TEST_FLEET, sort_keys=False)
    if copy_from_line:
        return text.replace("models:\n", "models:\n" + text[text.index(duplicated_line + "\n") :], 1)
    return text.replace(duplicated_line + "\n", (duplicated_line + "\n") * 2, 1)


DUPLICATE_KEYS = {
    "a model defined twice": ("  ENS:", True, "key 'ENS' is given twice"),
    "a key given twice deep inside a model": ("      max_frames_per_day: 500", False, "key 'max_frames_per_day' is given twice"),
}


@pytest.mark.parametrize("case", sorted(DUPLICATE_KEYS))
def test_a_key_given_twice_fails_at_load_naming_both_lines(case, tmp_path: Path):
    line, copy_from_line, expected = DUPLICATE_KEYS[case]
    text = _fleet_text_with(line, copy_from_line)
    first, second = [number for number, text_line in enumerate(text.splitlines(), 1) if text_line == line]
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_fleet_config(path)
    message = str(raised.value)
    assert str(path) in message and expected in message
    assert f"on line {first} and on line {second}" in message


def test_yaml_merge_keys_may_still_override_what_they_merge(tmp_path: Path):
    text = yaml.safe_dump(TEST_FLEET, sort_keys=False)
    text = text.replace("  ENS:\n", "  ENS: &ens\n", 1) + "  CnD:\n    <<: *ens\n    classes: [Glass]\n"
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    config = load_fleet_config(path)
    assert config.models["CnD"].classes == ["Glass"]
    assert config.models["CnD"].selection == config.models["ENS"].selection
