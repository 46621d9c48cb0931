"""bench/regime.py end to end at toy sizes: calibration, closed-loop collection, the datasets, our
methods on held-out variations, summary.json's shape, resuming, and the docs block.

The benchmark's figures are not checked here; this checks the plumbing the --quick and full runs rely on."""

import json
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("metaworld")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import regime  # noqa: E402


def test_tiny_regime_runs_resumes_and_reports(tmp_path, capsys, monkeypatch):
    args = regime.Args(
        out=tmp_path / "reg", tasks="reach-v3", demo_counts=(1, 2), calibration_seeds=1, autonomous=2, scale=(1, 2),
        seeds=1, steps=4, eval_episodes=2, curve_points=2, methods=("qtransformer", "bc_demos", "bc_filtered"),
        variant_methods=("qtransformer",), scale_methods=("qtransformer",), jobs=1, network="smoke",
    )
    regime.main(args)
    out = tmp_path / "reg"
    cal = json.loads((out / "calibration.json").read_text())
    assert set(cal["counts"]) == {"1", "2"} and cal["demos"] in (1, 2)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"qtransformer", "bc_demos", "bc_filtered"}
    for row in summary["methods"].values():
        assert set(row) == {"mean", "std", "per_seed"} and len(row["per_seed"]) == 1
        assert isinstance(row["mean"], float) and 0.0 <= row["mean"] <= 1.0
    assert set(summary["variants"]["no_auto_success"]["methods"]) == {"qtransformer"}
    assert set(summary["scaling"]["qtransformer"]) == {"1", "2"}
    assert summary["curves"]["qtransformer"]["steps"] == [2, 4]
    p = summary["protocol"]
    assert p["demonstrations_per_task"] == cal["demos"] and p["autonomous_per_task_1x"] == 2
    assert p["heldout_check"]["min_distance_to_a_training_start"] > 1e-6  # no evaluation variation is in the data
    assert set(p["ours"]) == {"qtransformer", "bc_demos", "bc_filtered"}  # the settings of what ran, not of every option
    assert all(json.loads(r.read_text())["device"] == "cpu" for r in (out / "runs").rglob("seed0.json"))  # each run says where it trained
    data = summary["data"]
    assert data["main"]["episodes_by_source"] == {"demonstration": cal["demos"], "autonomous": 2}
    assert data["scale_2x"]["episodes_by_source"]["autonomous"] == 4
    assert "autonomous" not in data["no_auto_success"]["by_source"] or data["no_auto_success"]["by_source"]["autonomous"] == 0.0
    table = (out / "table.md").read_text()
    assert "| Q-Transformer (`default` preset) |" in table and "Calibration" in table and "Data scaling" in table
    assert "Learning curves" in table and len(summary["curves"]["qtransformer"]["per_seed"]) == 1
    capsys.readouterr()

    import dataclasses

    regime.main(args)  # every run and dataset is on disk: nothing is trained or collected again
    printed = capsys.readouterr().out
    assert "methods: 5 runs, 5 done before, 0 to do" in printed and "collected" not in printed and "made" not in printed

    # An invocation for one method keeps the others' finished runs (same settings) in summary.json and the table.
    regime.main(dataclasses.replace(args, methods=("bc_demos",), variant_methods=(), scale_methods=(), no_train=True))
    assert "methods: 1 runs, 1 done before" in capsys.readouterr().out
    merged = json.loads((out / "summary.json").read_text())
    assert set(merged["methods"]) == {"qtransformer", "bc_demos", "bc_filtered"} and merged["methods"] == summary["methods"]
    assert set(merged["variants"]["no_auto_success"]["methods"]) == {"qtransformer"} and set(merged["scaling"]) == {"qtransformer"}
    assert "| filtered BC (successful episodes) |" in (out / "table.md").read_text()

    # --final-episodes: each run's final policy (step 4, not the curve's step 2) on N held-out episodes per
    # task, kept in the run's JSON, reported beside the curve's last point, and reused when asked again.
    seen = []

    def fake_success(ckpt, episodes):
        seen.append((Path(ckpt).name, episodes))
        return {"reach-v3": episodes / 100}

    monkeypatch.setattr(regime, "checkpoint_success", fake_success)
    regime.main(dataclasses.replace(args, final_episodes=3, no_train=True))
    assert seen == [("step_00000004", 3)] * 5  # 3 methods on main, 1 on the variant, 1 at 2x
    run = json.loads((out / "runs").rglob("qtransformer/seed0.json").__next__().read_text())
    assert run["final_eval"]["episodes"] == 3 and run["final_eval"]["success_rate"] == 0.03 and run["final_eval"]["checkpoint_step"] == 4
    fe = json.loads((out / "summary.json").read_text())["final_eval"]
    assert fe["episodes_per_task"] == 3 and set(fe["datasets"]) == {"main", "no_auto_success", "scale_2x"}
    row = fe["datasets"]["main"]["bc_demos"]
    assert row["per_seed"] == [0.03] and row["per_task"] == {"reach-v3": 0.03} and row["seeds"] == [0]
    assert row["curve_last_point"]["per_seed"] == summary["methods"]["bc_demos"]["per_seed"]
    assert "on 3 held-out episodes per task" in (out / "table.md").read_text()
    regime.main(dataclasses.replace(args, final_episodes=3, no_train=True))  # kept: nothing evaluated again
    assert len(seen) == 5
    regime.main(dataclasses.replace(args, final_episodes=4, no_train=True))  # another size: evaluated again
    assert seen[5:] == [("step_00000004", 4)] * 5
    with pytest.raises(SystemExit, match="--final-episodes must be >= 1"):
        regime.Args(final_episodes=0)
    capsys.readouterr()
    regime.main(dataclasses.replace(args, seeds=2, no_train=True))  # says what is missing, not that everything is done
    assert "methods: 10 runs, 5 done before, 5 not on disk (--no-train: left out)" in capsys.readouterr().out

    with pytest.raises(SystemExit, match="other settings"):  # datasets made another way are not reused silently
        regime.main(dataclasses.replace(args, epsilons=(0.5,)))
    with pytest.raises(SystemExit, match="collector_steps 4 -> 6"):  # a new budget would also change the collector
        regime.main(dataclasses.replace(args, steps=6))
    capsys.readouterr()

    # A larger budget on the same data: --collector-steps keeps the collector and every dataset.
    regime.main(dataclasses.replace(args, steps=6, collector_steps=4, demos=cal["demos"], scale=(1,), variant_methods=(), methods=("bc_demos",)))
    printed = capsys.readouterr().out
    assert "methods: 1 runs, 0 done before, 1 to do" in printed
    assert "collector" not in printed and "collected" not in printed and "made" not in printed
    again = json.loads((out / "summary.json").read_text())
    assert again["protocol"]["steps"] == 6 and "4 steps" in again["protocol"]["collector"]
    assert again["curves"]["bc_demos"]["steps"] == [3, 6]
    assert set(again["methods"]) == {"bc_demos"}  # the runs at 4 steps are not mixed into a 6-step summary


def test_write_docs_block(tmp_path):
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    docs.write_text("# Benchmarks\n\n<!-- bench.compare: begin -->\nold compare\n<!-- bench.compare: end -->\n")
    for text in ("regime one\n", "regime two\n"):
        regime.compare.write_docs(text, tmp_path, docs, begin=regime.DOCS_BEGIN, end=regime.DOCS_END, prefix="regime", pictures=regime.PICTURES)
    text = docs.read_text()
    assert "old compare" in text and "regime two" in text and "regime one" not in text
    assert text.count(regime.DOCS_BEGIN) == 1 and text.count(regime.DOCS_END) == 1


def test_threads_per_run_bad_value():
    with pytest.raises(SystemExit, match="--threads must be >= 1"):
        regime.Args(threads=0)


def test_curve_table_reports_the_best_point_and_each_seeds_last():
    # Two seeds: a method that peaks at 2000 steps and falls, so its last point (0.30) is below its best (0.40).
    curves = {"bc_demos": {"steps": [1000, 2000, 3000], "success": [0.1, 0.4, 0.3], "per_seed": [[0.0, 0.4, 0.2], [0.2, 0.4, 0.4]]}}
    lines = regime.curve_table(curves, ["bc_demos", "iql"])  # a method without a curve is left out
    assert "| 1k | 2k | 3k | best point |" in lines[3]
    assert lines[-1] == f"| {regime.LABELS['bc_demos']} | 0.10 | 0.40 | 0.30 | 0.40 (at 2000) | 0.20, 0.40 |"
    assert regime.curve_table({}, ["bc_demos"]) == []


def test_device_reaches_the_training_config(tmp_path, monkeypatch):
    # --device picks where our methods train; it is what train() receives, not the former fixed 'cpu'
    import qtransformer.train

    seen = {}

    def fake_train(cfg):
        seen["device"] = cfg.device
        raise RuntimeError("stop here")

    monkeypatch.setattr(qtransformer.train, "train", fake_train)
    args = regime.Args(out=tmp_path, device="auto", network="smoke", jobs=1, methods=("qtransformer",))
    spec = regime.spec_for(args, "qtransformer", tmp_path / "data", 0, "main")
    assert spec["device"] == "auto"
    with pytest.raises(RuntimeError, match="stop here"):
        regime._run_ours(spec)
    assert seen["device"] == "auto"


def test_a_run_from_before_the_default_prior_is_reused_for_bc_but_not_for_the_default(tmp_path):
    """The `default` preset trains a BC prior now: a Q-Transformer result written before (no "prior" key)
    no longer matches it, a BC result from then still does (BC takes no prior), and the paper preset's too."""
    args = regime.Args(out=tmp_path, network="smoke", jobs=1)
    for method, reused in (("qtransformer", False), ("bc_demos", True), ("qtransformer_paper", True), ("iql", True)):
        spec = regime.spec_for(args, method, tmp_path / "data", 0, "main")
        old = {k: spec[k] for k in ("method", "dataset", "seed", *regime.MATCH) if k != "prior"}
        Path(spec["result"]).parent.mkdir(parents=True, exist_ok=True)
        Path(spec["result"]).write_text(json.dumps(old))
        assert (regime.finished(spec) is not None) == reused, method
        assert spec["prior"] == ("auto-successful" if method == "qtransformer" else "none")
        if method == "qtransformer":  # nor one from the default with its prior on the demonstrations (before 2026-12-07)
            Path(spec["result"]).write_text(json.dumps(old | {"prior": "auto", "prior_weight": 0.01}))
            assert regime.finished(spec) is None
            Path(spec["result"]).write_text(json.dumps(old | {"prior": "auto-successful", "prior_weight": 0.01}))
            assert regime.finished(spec) is not None


def test_a_default_result_from_before_the_prior_weight_key_is_reused_at_the_defaults_weight_only(tmp_path):
    """Results written before "prior_weight" decoded their prior at 0.01, the `default` preset's weight: reused
    as such; one recorded at another weight is not (the same network, another decoding)."""
    args = regime.Args(out=tmp_path, network="smoke", jobs=1)
    spec = regime.spec_for(args, "qtransformer", tmp_path / "data", 0, "main")
    assert (spec["prior"], spec["prior_weight"]) == ("auto-successful", 0.01)
    Path(spec["result"]).parent.mkdir(parents=True, exist_ok=True)
    old = {k: spec[k] for k in ("method", "dataset", "seed", *regime.MATCH) if k != "prior_weight"}
    Path(spec["result"]).write_text(json.dumps(old))
    assert regime.finished(spec) is not None
    Path(spec["result"]).write_text(json.dumps(old | {"prior_weight": 0.03}))
    assert regime.finished(spec) is None
    assert regime.spec_for(args, "bc_demos", tmp_path / "data", 0, "main")["prior_weight"] is None


def test_a_killed_run_of_ours_resumes_from_its_last_checkpoint(tmp_path, monkeypatch, capsys):
    """A run killed half-way resumes where it stopped, in its BC prior or after it; the checkpoint it left is
    evaluated as it was, not trained again. One left by other settings, or whose clean-up had begun, starts again."""
    import dataclasses

    from qtransformer.data import EpisodeStore
    from qtransformer.envs.builtin_dataset import make_builtin_dataset
    from qtransformer.train import prior_config, train

    data = tmp_path / "data"
    EpisodeStore.create(data, make_builtin_dataset(demos=3, autonomous=5))
    args = regime.Args(out=tmp_path / "reg", network="smoke", jobs=1, steps=4, curve_points=2, eval_episodes=1)
    spec = regime.spec_for(args, "qtransformer", data, 0, "main")
    cfg = regime.run_config(spec)
    run_dir = Path(cfg.out)
    first = run_dir / "checkpoints" / "step_00000002"
    seen = []
    monkeypatch.setattr(regime, "checkpoint_success", lambda ckpt, episodes: seen.append((Path(ckpt).name, (Path(ckpt) / "left").exists())) or {"t": 0.5})

    train(dataclasses.replace(cfg, steps=2))  # its prior, then the main run to its first checkpoint of two
    (first / "left").touch()
    assert regime.killed_at(run_dir) == "step 2"
    run = regime._run_ours(spec)
    assert run["resumed_from"] == "step 2" and [c[0] for c in run["curve"]] == [2, 4]
    assert seen == [("step_00000002", True), ("step_00000004", False)]  # step 2 as the killed run left it
    assert "resumed from step 2" in capsys.readouterr().out
    assert regime.killed_at(run_dir) is None and not (run_dir / "prior").exists()  # a finished run: nothing to resume

    shutil.rmtree(run_dir)
    train(dataclasses.replace(prior_config(cfg), steps=2))  # killed in its prior
    assert regime.killed_at(run_dir) == "its prior"
    assert regime._run_ours(spec)["resumed_from"] == "its prior"

    shutil.rmtree(run_dir)
    seen.clear()
    train(dataclasses.replace(cfg, steps=2, algo=dataclasses.replace(cfg.algo, alpha=0.5)))  # another method's settings
    (first / "left").touch()
    run = regime._run_ours(spec)
    assert "resumed_from" not in run and seen == [("step_00000002", False), ("step_00000004", False)]
    assert "not resumed, started again" in capsys.readouterr().out

    shutil.rmtree(run_dir)
    train(dataclasses.replace(cfg, steps=2))
    shutil.rmtree(first / "training_state")  # killed in the clean-up after its evaluations
    assert regime.killed_at(run_dir) is None
    assert "resumed_from" not in regime._run_ours(spec)
