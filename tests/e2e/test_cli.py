"""The `qtransformer` command as a new user meets it: help, make-dataset, info, train, resume, eval."""

from __future__ import annotations

import json

import pytest

from qtransformer.cli import main


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("make-dataset", "train", "eval", "info", "demo"):
        assert f"  {command}" in out


def test_unknown_command_fails(capsys):
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_make_train_resume_eval_info(tmp_path, capsys):
    data, run, result = tmp_path / "data", tmp_path / "run", tmp_path / "eval.json"
    assert main(["make-dataset", "builtin", "--demos", "4", "--autonomous", "6", "--out", str(data)]) == 0
    assert (data / "episodes.npz").exists() and (data / "meta.json").exists()

    assert main(["info", str(data)]) == 0
    out = capsys.readouterr().out
    assert "10 episodes" in out and "| demonstration | 4 |" in out and "| autonomous | 6 |" in out

    train = ["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress"]
    assert main([*train, "--steps", "20"]) == 0
    assert (run / "checkpoints" / "last").read_text().strip() == "step_00000020"
    assert main(train) == 2  # the folder holds a run: refuse to overwrite it
    assert "pass --resume" in capsys.readouterr().err
    assert main([*train, "--resume", "--steps", "30"]) == 0
    assert (run / "checkpoints" / "last").read_text().strip() == "step_00000030"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and max(steps) == 30

    assert main(["eval", "--checkpoint", str(run), "--episodes", "3", "--out", str(result)]) == 0
    report = json.loads(result.read_text())
    assert report["episodes"] == 3 and len(report["per_episode"]) == 3
    assert 0.0 <= report["success_rate"] <= 1.0
    assert report["env_id"] == "qtransformer/PointReach3D-v0"

    assert main(["info", str(run)]) == 0
    assert "parameters" in capsys.readouterr().out


def test_bad_dataset_path_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--preset", "smoke", "--dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "make-dataset" in err


@pytest.mark.parametrize("bad", ['{"algo": {"n_step_mode": "all-dims"}}', '{"model": {"d_model": 30, "n_heads": 4}}', '{"stepz": 3}'])
def test_bad_config_file_is_a_clear_error(tmp_path, capsys, bad):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(bad)
    assert main(["train", "--config", str(cfg), "--dataset", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err


def test_unknown_eval_env_fails_before_training(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["make-dataset", "builtin", "--demos", "2", "--autonomous", "2", "--out", str(data)]) == 0
    argv = ["train", "--preset", "smoke", "--dataset", str(data), "--out", str(tmp_path / "run"), "--no-progress"]
    assert main([*argv, "--eval-env", "NoSuchEnv-v9", "--eval-episodes", "2"]) == 2
    assert "NoSuchEnv-v9" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()  # failed before any training step
