"""MetaWorld through the command line: make-dataset, train with evaluation, eval JSON, collect, info."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("metaworld")

from qtransformer.cli import main  # noqa: E402


def test_make_train_eval_collect_on_two_metaworld_tasks(tmp_path, capsys):
    data, run, report = tmp_path / "data", tmp_path / "run", tmp_path / "eval.json"
    assert main(["make-dataset", "metaworld", "--tasks", "reach-v3,push-v3", "--demos", "2", "--autonomous", "2", "--max-steps", "60", "--out", str(data)]) == 0
    out = capsys.readouterr().out
    assert "| reach-v3 | demonstration | 2 |" in out and "| push-v3 | autonomous | 2 |" in out
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "4", "--eval-episodes", "1"]) == 0
    assert main(["eval", "--checkpoint", str(run), "--episodes", "2", "--out", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["env_id"] == "metaworld:reach-v3,push-v3" and result["episodes"] == 4
    assert set(result["per_task"]) == {"reach-v3", "push-v3"} and 0.0 <= result["success_rate"] <= 1.0
    # one task of a multi-task policy: its task id is found by name
    assert main(["eval", "--checkpoint", str(run), "--env", "metaworld:push-v3", "--episodes", "1"]) == 0
    assert main(["collect", "--checkpoint", str(run), "--env", "metaworld:push-v3", "--into", str(data), "--episodes", "1"]) == 0
    capsys.readouterr()
    assert main(["info", str(data)]) == 0
    out = capsys.readouterr().out
    assert "9 episodes" in out and "| push-v3 | 5 |" in out


def test_camera_dataset_trains_an_image_policy_that_evaluates_from_frames(tmp_path, capsys):
    data, run, report = tmp_path / "cam", tmp_path / "run", tmp_path / "eval.json"
    assert main(["make-dataset", "metaworld", "--tasks", "reach-v3", "--demos", "1", "--autonomous", "1", "--max-steps", "10",
                 "--camera", "corner", "--image-size", "32", "--out", str(data)]) == 0
    assert "env metaworld:reach-v3?camera=corner&size=32" in capsys.readouterr().out
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "2", "--eval-episodes", "0"]) == 0
    assert main(["eval", "--checkpoint", str(run), "--episodes", "1", "--out", str(report)]) == 0
    assert json.loads(report.read_text())["env_id"] == "metaworld:reach-v3?camera=corner&size=32"
    capsys.readouterr()
    assert main(["make-dataset", "metaworld", "--tasks", "reach-v3", "--camera", "kitchen", "--out", str(tmp_path / "x")]) == 2
    assert "unknown MetaWorld camera 'kitchen'" in capsys.readouterr().err


def test_paper_mix_and_an_unknown_task(tmp_path, capsys):
    data = tmp_path / "mix"
    assert main(["make-dataset", "metaworld", "--tasks", "reach-v3", "--demos", "1", "--paper-mix", "--max-steps", "40", "--out", str(data)]) == 0
    assert "| reach-v3 | autonomous | 12 |" in capsys.readouterr().out  # round(1 * 92 / 8) replays
    assert main(["make-dataset", "metaworld", "--tasks", "reech-v3", "--out", str(tmp_path / "x")]) == 2
    assert "reech-v3" in capsys.readouterr().err


def test_workers_make_the_same_dataset(tmp_path):
    from qtransformer.envs.metaworld_dataset import make_metaworld_dataset

    kw = dict(demos=1, autonomous=1, recipe="replay", seed=3, max_steps=30, progress=False)
    one = make_metaworld_dataset(["reach-v3", "push-v3"], workers=1, **kw)
    two = make_metaworld_dataset(["reach-v3", "push-v3"], workers=2, **kw)
    for key in ("observations", "actions", "rewards", "terminals", "timeouts", "episode_starts", "episode_task"):
        np.testing.assert_array_equal(getattr(one, key), getattr(two, key))
