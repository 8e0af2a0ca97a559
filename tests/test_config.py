"""The training configuration: types, unknown keys, overrides, YAML round-trip, cross-field checks."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from casparks.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
)
from casparks.errors import CasparksError


def test_defaults_are_valid_and_frozen():
    config = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.data.batch_size = 3  # type: ignore[misc]
    assert config_from_dict(config.to_dict()) == config


def test_yaml_roundtrip(tmp_path):
    config = apply_overrides(TrainConfig(), {"data.batch_size": 2, "network.attention": True, "loss.w": 0.25})
    path = save_config(tmp_path / "config.yaml", config)
    assert load_config(path) == config
    text = yaml.safe_load(path.read_text())
    assert text["format_version"] == 1 and text["data"]["batch_size"] == 2


def test_overrides_take_full_or_bare_keys_and_parse_yaml_values():
    config = apply_overrides(
        TrainConfig(),
        [("batch_size", "8"), ("network.attention", "true"), ("data_dir", "[a, b]"),
         ("class_weights", "[1, 2, 3, 4]"), ("load_epoch", "null"), ("lr_start", "3e-4")],
    )
    assert config.data.batch_size == 8
    assert config.network.attention is True
    assert config.data.data_dir == ("a", "b")
    assert config.loss.class_weights == (1.0, 2.0, 3.0, 4.0)
    assert config.run.load_epoch is None
    assert config.loss.lr_start == pytest.approx(3e-4)


def test_single_folder_becomes_a_list():
    assert apply_overrides(TrainConfig(), {"data_dir": "movies"}).data.data_dir == ("movies",)


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("batchsize", "3", "did you mean 'batch_size'"),
        ("learning_rate", "1e-4", "'Training' → 'The configuration' (e.g. loss.lr_start"),  # was: see --help (no keys there)
        ("data.batchsize", "3", "data.batchsize"),
        ("norm_video", "foo", "data.norm_video must be"),
        ("unet_steps", "2.5", "network.unet_steps must be int"),
        ("attention", "maybe", "network.attention must be bool"),
        ("batch_size", "0", "data.batch_size must be positive"),
        ("w", "1.5", "loss.w must lie in [0, 1]"),
        ("dropout", "1.5", "network.dropout must lie in [0, 1)"),  # was PyTorch's traceback
        ("dropout", "1", "network.dropout must lie in [0, 1)"),
        ("scheduler_gamma", "0", "loss.scheduler_gamma must be positive"),  # lr 0 (negative: a negative lr)
        ("scheduler_gamma", "-0.5", "loss.scheduler_gamma must be positive"),
        ("class_weights", "sometimes", "loss.class_weights"),
        ("ignore_frames_loss", "200", "leaves no frame"),
        ("intensity_scale", "[2, 1]", "data.intensity_scale"),
        ("time_pooling_steps", "9", "time_pooling_steps"),
        ("crop_size_um", "[12.8, 0]", "data.crop_size_um must be"),
        ("crop_size_um", "[12.8]", "crop_size_um"),
        ("crop_size_um", "[0.1, 0.1]", "under 16 pixels (1.6 µm at 0.1 µm) along an axis"),  # was NumPy's error
        ("crop_class_ratios", "[1, 1, 1, 1]", "data.crop_class_ratios needs data.crop_size_um"),
        ("crop_class_ratios", "[1, 1, 1]", "crop_class_ratios"),
    ],
)
def test_bad_values_name_the_key(key, value, needle):
    with pytest.raises(ConfigError) as info:
        apply_overrides(TrainConfig(), {key: value})
    assert needle in str(info.value)
    assert isinstance(info.value, CasparksError) and isinstance(info.value, ValueError)


def test_booleans_are_never_true_by_accident():
    # the reference's configparser made "no" true; YAML's no/off/false are false here
    for text in ("no", "off", "false", "False"):
        assert apply_overrides(TrainConfig(), {"attention": text}).network.attention is False
    with pytest.raises(ConfigError):
        config_from_dict({"network": {"attention": "no thanks"}})


@pytest.mark.parametrize("section, key, expected", [
    ("run", "lr_start", "did you mean loss.lr_start?"),
    ("loss", "train_epochs", "did you mean run.train_epochs?"),
    ("data", "seed", "did you mean run.seed?"),
    ("run", "train_epoch", "did you mean run.train_epochs?"),  # a typo within the section comes first
])
def test_a_key_under_the_wrong_section_is_told_its_section(section, key, expected):
    """run.lr_start was told the run section's whole list of keys."""
    with pytest.raises(ConfigError, match=f"unknown key {section}.{key}.*{expected}"):
        config_from_dict({section: {key: 1}})


def test_unknown_section_and_version(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'network'"):
        config_from_dict({"netwrok": {}})
    with pytest.raises(ConfigError, match="format_version 7"):
        config_from_dict({"format_version": 7})


def test_validation_must_not_be_the_test_set(tmp_path):
    with pytest.raises(ConfigError, match="validation must not be the test set"):
        config_from_dict({"data": {"val_dir": [str(tmp_path)], "test_dir": [str(tmp_path / ".")]}})


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  run_name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line") as info:
        load_config(bad)
    assert str(bad) in str(info.value)
    typo = tmp_path / "typo.yaml"
    typo.write_text("data:\n  batch_sise: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(typo)
    assert str(typo) in str(info.value) and "data.batch_sise" in str(info.value)


def test_relative_data_folders_resolve_against_the_config(tmp_path):
    path = tmp_path / "cfg" / "c.yaml"
    path.parent.mkdir()
    path.write_text("data:\n  data_dir: [../movies]\n  test_dir: /abs/test\n")
    config = load_config(path)
    assert config.data.data_dir == (str(path.parent / "../movies"),)
    assert config.data.test_dir == ("/abs/test",)


def test_overrides_after_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  batch_size: 2\n")
    assert load_config(path, [("batch_size", "5")]).data.batch_size == 5


def test_a_number_with_a_leading_zero_is_read_as_typed(tmp_path):
    """YAML 1.1 reads 010 as octal 8: val_ids [010] validated on movie 008 without a word."""
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  val_ids: [010, 06, 7]\nrun:\n  train_epochs: 010\n")
    config = load_config(path)
    assert config.data.val_ids == ("010", "06", "7")
    assert config.run.train_epochs == 10
    assert apply_overrides(TrainConfig(), {"data.val_ids": "[010]"}).data.val_ids == ("010",)
    assert apply_overrides(TrainConfig(), {"loss.lr_start": "0.001"}).loss.lr_start == 0.001


def test_the_plateau_scheduler_needs_a_gamma_below_1():
    """loss.scheduler plateau with scheduler_gamma 1 failed in PyTorch with a traceback, after the
    run folder was made."""
    with pytest.raises(ConfigError, match="below 1 under the plateau scheduler"):
        apply_overrides(TrainConfig(), {"loss.scheduler": "plateau", "loss.scheduler_gamma": "1"})
    assert apply_overrides(TrainConfig(), {"loss.scheduler": "step", "loss.scheduler_gamma": "1"})


def test_settings_yaml_reads_a_leading_zero_as_decimal():
    """detect's --set and simulate's parameters hold no ids: 020 is twenty, as typed (YAML 1.1: 16)."""
    from casparks.config import read_numbers_yaml

    assert read_numbers_yaml("020") == 20 and read_numbers_yaml("[010, 0.5, 0]") == [10, 0.5, 0]
    assert read_numbers_yaml("none") == "none" and read_numbers_yaml("0x10") == 16


def test_settings_yaml_reads_an_exponent_as_a_number(tmp_path):
    """YAML 1.1 reads 9e-1 (no dot) and 1.0e5 (no sign) as text: detect's --set refused
    spark_threshold=9e-1, simulate's --set frame_interval_ms=6.8e0 and a card's puff_threshold:
    6e-1, while a training config's lr_start=3e-4 was taken."""
    from casparks.config import read_numbers_yaml
    from casparks.models import _read_card
    from casparks.postprocess import PostprocessConfig
    from casparks.simulation_params import coerce_value

    assert read_numbers_yaml("9e-1") == 0.9 and read_numbers_yaml("5e1") == 50.0
    assert read_numbers_yaml("1.0e5") == 1e5 and read_numbers_yaml("-2E+3") == -2000.0
    assert read_numbers_yaml("[1e1, probability, 1e]") == [10.0, "probability", "1e"]
    config = PostprocessConfig(**{"spark_threshold": read_numbers_yaml("9e-1"),
                                  "wave_split_min_area_um2": read_numbers_yaml("5e1")})
    assert config.spark_threshold == 0.9 and config.wave_split_min_area_um2 == 50.0
    assert coerce_value("frame_interval_ms", "6.8e0") == 6.8
    card = tmp_path / "x.yaml"
    card.write_text("postprocess:\n  puff_threshold: 6e-1\n", encoding="utf-8")
    assert _read_card(card)["postprocess"]["puff_threshold"] == 0.6


def test_a_tilde_in_a_configs_folders_is_the_home_folder(tmp_path, monkeypatch):
    """YAML values are no shell words: data_dir [~/trs] was read as CONFIG_DIR/~/trs, and
    output_dir ~/runs made a folder named '~' while the label cache was looked for at home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "cfg" / "c.yaml"
    path.parent.mkdir()
    path.write_text("run: {output_dir: ~/runs}\ndata: {data_dir: [~/trs, sets/a]}\n", encoding="utf-8")
    config = load_config(path)
    assert config.data.data_dir == (str(tmp_path / "home" / "trs"), str(tmp_path / "cfg" / "sets" / "a"))
    assert config.run.output_dir == str(tmp_path / "home" / "runs")
    assert load_config(None, {"run.output_dir": "~/r"}).run.output_dir == str(tmp_path / "home" / "r")


def test_a_binary_file_given_as_the_config_is_one_line(tmp_path):
    """casparks train movie.tif was a UnicodeDecodeError traceback."""
    movie = tmp_path / "01_video.tif"
    movie.write_bytes(b"II*\x00\x08\x00\x00\x00\xff\xfe\x80\x81")
    with pytest.raises(ConfigError, match="01_video.tif: is not a YAML config"):
        load_config(movie)
