"""bench/ogbench.py keeps working: a tiny run of our own methods end to end (data, training, evaluation in
OGBench's single-task environment, summary.json's shape), resuming, and the summary's arithmetic.

The benchmark's figures come from the real run (docs/benchmarks.md), not from here. d3rlpy's IQL and
ReBRAC are not run: d3rlpy is in the bench extra only."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("ogbench")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import ogbench as bench  # noqa: E402


def test_tiny_benchmark_runs_resumes_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QTRANSFORMER_CACHE", str(tmp_path / "cache"))
    args = bench.Args(
        envs=("cube-single",), tasks=(1,), seeds=1, steps=6, eval_episodes=1, curve_points=2, methods=("qtransformer", "bc"),
        episodes=2, episode_length=21, workers=1, jobs=1, out=tmp_path / "ogb",
    )
    bench.main(args)
    summary = json.loads((tmp_path / "ogb" / "summary.json").read_text())
    assert set(summary) >= {"cube-single", "protocol"}
    for m in ("qtransformer", "bc"):
        row = summary["cube-single"][m]
        assert set(row) >= {"mean", "std", "per_task", "per_seed"} and set(row["per_task"]) == {"task1"}
        assert 0.0 <= row["mean"] <= 1.0 and row["curve_steps"] == [3, 6]
    assert summary["protocol"]["steps"] == 6 and summary["protocol"]["heldout_envs"] == ["scene", "puzzle-3x3"]
    run = json.loads((tmp_path / "ogb" / "runs" / "cube-single-task1" / "qtransformer" / "seed0.json").read_text())
    assert run["env_id"] == "ogbench:cube-single-singletask-task1-v0" and run["preset"] == "default"
    table = (tmp_path / "ogb" / "table.md").read_text()
    assert "| cube-single | 0 |" in table and "| 83 |" in table  # our data's success, and the published IQL beside
    capsys.readouterr()

    bench.main(args)  # every run is on disk: nothing is trained again, the dataset is not remade
    out = capsys.readouterr().out
    assert "2 runs, 2 done before, 0 to do" in out and "made " not in out


def _result(env, method, task, seed, success):
    return {"env": env, "method": method, "task": task, "seed": seed, "success_rate": success,
            "curve": [[5, success / 2], [10, success]], "train_s": 1.0}


def test_summary_averages_tasks_per_seed_and_drops_incomplete_seeds():
    args = bench.Args(envs=("cube-single",), tasks=(1, 2), seeds=3, methods=("qtransformer",))
    results = [
        _result("cube-single", "qtransformer", 1, 0, 1.0), _result("cube-single", "qtransformer", 2, 0, 0.5),
        _result("cube-single", "qtransformer", 1, 1, 0.5), _result("cube-single", "qtransformer", 2, 1, 0.0),
        _result("cube-single", "qtransformer", 1, 2, 1.0),  # seed 2 lacks task 2: left out
    ]
    row = bench.summarize(args, results)["cube-single"]["qtransformer"]
    assert row["per_seed"] == [0.75, 0.25] and row["seeds"] == 2
    assert row["mean"] == pytest.approx(0.5) and row["std"] == pytest.approx(0.25)
    assert row["per_task"] == {"task1": 0.75, "task2": 0.25}
    assert row["curve"] == pytest.approx([0.25, 0.5]) and row["curve_steps"] == [5, 10]


def test_protocols_and_bad_arguments():
    reduced, full = bench.Args(), bench.Args(protocol="full")
    assert reduced.tasks == (1, 2) and reduced.seeds == 3 and set(bench.TUNING_ENVS) <= set(reduced.envs)
    assert full.tasks == (1, 2, 3, 4, 5) and full.seeds == 8 and full.steps == 1_000_000 and "puzzle-4x4" in full.envs
    assert bench.Args(steps=10).steps == 10  # an explicit value wins over the protocol's
    with pytest.raises(SystemExit, match="--envs: unknown cube-triple"):
        bench.Args(envs=("cube-triple",))
    with pytest.raises(SystemExit, match="--tasks"):
        bench.Args(tasks=(6,))
    with pytest.raises(SystemExit, match="--methods: unknown fql"):
        bench.Args(methods=("fql",))
    with pytest.raises(SystemExit, match="--threads must be >= 1"):
        bench.Args(threads=0)
