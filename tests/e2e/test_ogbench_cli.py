"""OGBench through the command line: make-dataset ogbench, train (its env_id recorded), eval and collect."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ogbench")

from qtransformer.cli import main  # noqa: E402


def test_make_train_eval_collect_on_cube_single(tmp_path, capsys):
    data, run, report = tmp_path / "data", tmp_path / "run", tmp_path / "eval.json"
    assert main(["make-dataset", "ogbench", "--env", "cube-single", "--dataset", "play", "--task", "1", "--episodes", "2",
                 "--episode-length", "12", "--cache", str(tmp_path / "cache"), "--out", str(data)]) == 0
    out = capsys.readouterr().out
    assert "env ogbench:cube-single-singletask-task1-v0" in out and "| transitions | 22 |" in out and "success rate" in out
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "2", "--eval-episodes", "0"]) == 0
    env_id = "ogbench:cube-single-singletask-task1-v0"
    assert main(["eval", "--checkpoint", str(run), "--env", env_id, "--episodes", "1", "--out", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["env_id"] == env_id and result["episodes"] == 1 and 0.0 <= result["success_rate"] <= 1.0
    ep = result["per_episode"][0]
    assert ep["length"] <= 200 and (ep["success"] or ep["length"] == 200)  # ends at success or at OGBench's time limit
    assert main(["eval", "--checkpoint", str(run), "--episodes", "1"]) == 0  # the dataset's env_id, recorded with the model
    assert main(["collect", "--checkpoint", str(run), "--into", str(data), "--episodes", "1"]) == 0
    capsys.readouterr()
    assert main(["info", str(data)]) == 0
    assert "env ogbench:cube-single-singletask-task1-v0" in capsys.readouterr().out
