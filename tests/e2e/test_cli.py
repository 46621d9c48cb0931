"""The `qtransformer` command as a new user meets it: help, make-dataset, info, train, resume, eval."""

from __future__ import annotations

import json

import numpy as np
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
    assert (data / "chunks" / "000000" / "observations.npy").exists() and (data / "meta.json").exists()

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


def test_make_dataset_never_overwrites_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["make-dataset", "builtin", "--demos", "1", "--autonomous", "1", "--out", str(precious)]) == 2
    assert "not a dataset folder" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me" and sorted(p.name for p in precious.iterdir()) == ["notes.txt"]
    # an existing dataset folder may be replaced
    data = tmp_path / "data"
    assert main(["make-dataset", "builtin", "--demos", "1", "--autonomous", "1", "--out", str(data)]) == 0
    assert main(["make-dataset", "builtin", "--demos", "2", "--autonomous", "1", "--out", str(data)]) == 0
    assert "3 episodes" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "steps: must be at least 1"),
        (["--batch-size", "0"], "batch_size: must be at least 1"),
        (["--save-every", "0"], "save_every: must be at least 1"),
    ],
)
def test_bad_values_on_the_command_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:  # tyro reports flag errors itself, with exit code 2
        main(["train", "--preset", "smoke", "--dataset", str(tmp_path), "--out", str(tmp_path / "run"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_resume_checks_dataset_and_names_the_differing_field(tmp_path, capsys):
    a, b, run = tmp_path / "a", tmp_path / "b", tmp_path / "run"
    for d in (a, b):
        assert main(["make-dataset", "builtin", "--demos", "2", "--autonomous", "2", "--out", str(d)]) == 0
    base = ["train", "--preset", "smoke", "--out", str(run), "--no-progress", "--steps", "20"]
    assert main([*base, "--dataset", str(a)]) == 0
    capsys.readouterr()
    assert main([*base, "--dataset", str(b), "--resume", "--steps", "30"]) == 2
    assert "dataset (saved" in capsys.readouterr().err
    assert main([*base, "--dataset", str(a), "--resume", "--steps", "30", "--algo.alpha", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "algo.alpha (saved 1.0, now 0.5)" in err and "algo.gamma" not in err
    # resuming a finished run trains nothing and logs nothing new
    rows = (run / "metrics.jsonl").read_text()
    assert main([*base, "--dataset", str(a), "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (run / "metrics.jsonl").read_text() == rows


def test_eval_needs_at_least_one_episode(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["make-dataset", "builtin", "--demos", "2", "--autonomous", "2", "--out", str(data)]) == 0
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "2"]) == 0
    assert main(["eval", "--checkpoint", str(run), "--episodes", "0"]) == 2
    assert "episodes must be at least 1" in capsys.readouterr().err


def test_collect_appends_episodes_that_info_counts_and_training_uses(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["make-dataset", "builtin", "--demos", "2", "--autonomous", "2", "--out", str(data)]) == 0
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "4", "--eval-episodes", "0"]) == 0
    capsys.readouterr()
    assert main(["collect", "--checkpoint", str(run), "--into", str(data), "--episodes", "3", "--epsilon", "0.5"]) == 0
    assert "now holds 7 episodes" in capsys.readouterr().out
    assert main(["info", str(data)]) == 0
    out = capsys.readouterr().out
    assert "7 episodes" in out and "2 chunk(s)" in out and "| autonomous | 5 |" in out
    # the same seed collects the same episodes
    other = tmp_path / "other"
    for target in (other, other):
        assert main(["collect", "--checkpoint", str(run), "--into", str(target), "--episodes", "2", "--epsilon", "0.5"]) == 0
    from qtransformer.data import EpisodeStore

    store = EpisodeStore.open(other)
    np.testing.assert_array_equal(store.chunks[0].actions, store.chunks[1].actions)
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(tmp_path / "run2"), "--no-progress", "--steps", "2", "--eval-episodes", "0"]) == 0


def test_eval_workers_split_the_episodes_without_changing_them(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["make-dataset", "builtin", "--demos", "3", "--autonomous", "3", "--out", str(data)]) == 0
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "30", "--eval-episodes", "0"]) == 0
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main(["eval", "--checkpoint", str(run), "--episodes", "6", "--out", str(one)]) == 0
    assert main(["eval", "--checkpoint", str(run), "--episodes", "6", "--workers", "2", "--out", str(two)]) == 0
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert a["per_episode"] == b["per_episode"] and len(a["per_episode"]) == 6
    assert [e["seed"] for e in b["per_episode"]] == [10_000_000 + i for i in range(6)]


def test_eval_video_writes_one_gif_per_recorded_episode(tmp_path):
    from PIL import Image

    data, run, videos = tmp_path / "data", tmp_path / "run", tmp_path / "videos"
    assert main(["make-dataset", "builtin", "--demos", "2", "--autonomous", "2", "--out", str(data)]) == 0
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "2", "--eval-episodes", "0"]) == 0
    report = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run), "--episodes", "3", "--video", str(videos), "--video-episodes", "2", "--out", str(report)]) == 0
    gifs = sorted(videos.glob("*.gif"))
    assert len(gifs) == 2 and json.loads(report.read_text())["videos"] == [str(p) for p in gifs]
    for gif, episode in zip(gifs, json.loads(report.read_text())["per_episode"], strict=False):  # 2 of the 3 episodes recorded
        with Image.open(gif) as im:
            assert im.size == (128, 128) and im.n_frames == episode["length"] + 1  # the reset frame, then one per step


def test_baselines_train_from_the_command_line(tmp_path):
    data = tmp_path / "data"
    assert main(["make-dataset", "builtin", "--demos", "2", "--autonomous", "3", "--out", str(data)]) == 0
    base = ["train", "--preset", "smoke", "--dataset", str(data), "--no-progress", "--steps", "3", "--eval-episodes", "0"]
    assert main([*base, "--out", str(tmp_path / "bc"), "--algo.method", "bc", "--only-successful"]) == 0
    assert main([*base, "--out", str(tmp_path / "cql"), "--algo.regularizer", "cql"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "bc" / "metrics.jsonl").read_text().splitlines()]
    assert "train/bc_loss" in rows[-1] and "train/td_loss" not in rows[-1]
