"""Configuration (config.py, cli.parse_train_args): presets, overrides, files, precedence."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from qtransformer.cli import parse_train_args
from qtransformer.config import (
    PRESETS,
    AlgoConfig,
    ConfigError,
    ModelConfig,
    TrainConfig,
    algo_from_dict,
    apply_overrides,
    load_config_file,
    model_from_dict,
    preset,
    to_dict,
)


@pytest.mark.parametrize("name", ["smoke", "default", "paper", "builtin"])
def test_presets_build_and_apply_their_values(name):
    cfg = preset(name)
    assert isinstance(cfg, TrainConfig) and cfg.preset == name
    assert isinstance(cfg.model, ModelConfig) and isinstance(cfg.algo, AlgoConfig)
    for key, value in PRESETS[name].items():
        if isinstance(value, dict):
            for sub, v in value.items():
                assert getattr(getattr(cfg, key), sub) == v, f"{key}.{sub}"
        else:
            assert getattr(cfg, key) == value, key
    assert cfg.model.d_model % cfg.model.n_heads == 0


def test_smoke_preset_overrides_nested_fields_and_keeps_the_rest():
    cfg = preset("smoke")
    default = TrainConfig()
    assert cfg.model.d_model == PRESETS["smoke"]["model"]["d_model"]
    assert cfg.model.mlp_ratio == default.model.mlp_ratio  # not in the preset: the default stays
    assert cfg.algo.gamma == default.algo.gamma


def test_unknown_preset_raises():
    with pytest.raises(ConfigError, match="nope"):
        preset("nope")


def test_apply_overrides_unknown_field_raises_naming_it():
    with pytest.raises(ConfigError, match="'bogus_field'"):
        apply_overrides(TrainConfig(), {"bogus_field": 1})
    with pytest.raises(ConfigError, match="'widthh'"):
        apply_overrides(TrainConfig(), {"model": {"widthh": 3}})
    with pytest.raises(ConfigError, match="'model'"):
        apply_overrides(TrainConfig(), {"model": 3})


def test_apply_overrides_returns_a_copy_with_dashes_accepted():
    base = TrainConfig()
    cfg = apply_overrides(base, {"batch-size": 7, "algo": {"num_bins": 9}, "out": "somewhere"})
    assert cfg.batch_size == 7 and cfg.algo.num_bins == 9 and cfg.out == Path("somewhere")
    assert base.batch_size == TrainConfig().batch_size and base.algo.num_bins == AlgoConfig().num_bins


def test_json_round_trip():
    cfg = apply_overrides(preset("smoke"), {"dataset": "data/x", "algo": {"gamma": 0.5}})
    d = json.loads(json.dumps(to_dict(cfg)))
    again = apply_overrides(TrainConfig(), d)
    assert again == cfg
    assert model_from_dict(d["model"]) == cfg.model and algo_from_dict(d["algo"]) == cfg.algo


def test_json_and_yaml_config_files_load(tmp_path):
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"steps": 11, "model": {"d_model": 24}}))
    y = tmp_path / "c.yaml"
    y.write_text("steps: 12\nalgo:\n  gamma: 0.5\n  n_step_mode: all_dims\n")
    assert load_config_file(j) == {"steps": 11, "model": {"d_model": 24}}
    assert load_config_file(y) == {"steps": 12, "algo": {"gamma": 0.5, "n_step_mode": "all_dims"}}
    cfg = apply_overrides(TrainConfig(), load_config_file(y))
    assert cfg.steps == 12 and cfg.algo.gamma == 0.5 and cfg.algo.n_step_mode == "all_dims"


def test_bad_config_files_raise_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match="absent.json"):
        load_config_file(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ nope")
    with pytest.raises(ConfigError, match="bad.json"):
        load_config_file(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml"):
        load_config_file(listy)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_flags_override_file_override_preset(tmp_path, suffix):
    path = tmp_path / f"cfg{suffix}"
    data = {"steps": 99, "batch_size": 8, "model": {"d_model": 24}}
    if suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        path.write_text("steps: 99\nbatch_size: 8\nmodel:\n  d_model: 24\n")
    cfg = parse_train_args(["--preset", "smoke", "--config", str(path), "--steps", "7"])
    assert cfg.steps == 7  # flag beats file (99) and preset (40)
    assert cfg.batch_size == 8  # file beats preset (32)
    assert cfg.model.d_model == 24  # file beats preset (32), nested
    smoke = preset("smoke")
    assert cfg.model.n_layers == smoke.model.n_layers  # from the preset
    assert cfg.log_every == smoke.log_every  # from the preset
    assert cfg.algo.warmup_steps == smoke.algo.warmup_steps


def test_parse_train_args_unknown_field_in_file_raises(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(ConfigError, match="stepz"):
        parse_train_args(["--config", str(path)])


def test_config_file_values_are_type_checked(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("algo:\n  lr: 3e-4\n")  # PyYAML reads this as the string '3e-4'
    assert parse_train_args(["--config", str(y)]).algo.lr == pytest.approx(3e-4)
    for bad, field in [("steps: abc\n", "steps"), ("batch_size: 32.5\n", "batch_size"), ("algo:\n  lr: fast\n", "lr"), ("preset: smoke\n", "preset")]:
        y.write_text(bad)
        with pytest.raises(ConfigError, match=field):
            parse_train_args(["--config", str(y)])


def test_paper_preset_is_the_papers_objective_and_default_is_not():
    paper, default = preset("paper").algo, preset("default").algo
    assert (paper.conservative_bins, paper.head_init, paper.imitation_weight, paper.support_tau) == (0, "default", 0.0, 0.0)
    assert paper.num_bins == 256 and paper.alpha == 1.0 and paper.regularizer == "zero" and paper.mc_bound
    assert (default.conservative_bins, default.head_init) == (16, "data_mean")
    assert default.act_with == "target" and paper.act_with == "online"
    assert dataclasses.replace(default, conservative_bins=0, head_init="default", act_with="online") == paper
    assert paper.bin_smoothing == 0.0 and default.bin_smoothing == 0.0  # bin smoothing: an option, off in both


def test_support_options_need_the_imitation_head():
    with pytest.raises(ConfigError, match="imitation-weight"):
        AlgoConfig(support_tau=0.3)
    with pytest.raises(ConfigError, match="support-tau"):
        AlgoConfig(imitation_weight=1.0, support_in_targets=True)
    with pytest.raises(ConfigError, match="support_tau"):
        AlgoConfig(imitation_weight=1.0, support_tau=1.5)
    with pytest.raises(ConfigError, match="conservative_bins"):
        AlgoConfig(conservative_bins=1)
    AlgoConfig(imitation_weight=1.0, support_tau=0.3, support_in_targets=True)  # a valid combination


def test_bin_smoothing_is_checked_and_refused_with_an_hl_gauss_head():
    with pytest.raises(ConfigError, match="algo.bin_smoothing"):
        AlgoConfig(bin_smoothing=-0.1)
    with pytest.raises(ConfigError, match="algo.bin_smoothing"):
        AlgoConfig(bin_smoothing=2.0)
    with pytest.raises(ConfigError, match="--algo.bin-smoothing 0"):
        apply_overrides(preset("default"), {"model": {"value_atoms": 16}, "algo": {"bin_smoothing": 1 / 64}})
    assert apply_overrides(preset("default"), {"algo": {"bin_smoothing": 1 / 64}}).algo.bin_smoothing == 1 / 64
