"""bench.decoding: one trained network evaluated under several decoding rules, resumable."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bench import decoding
from qtransformer.cli import main
from qtransformer.evaluate import evaluate_policy
from qtransformer.policy import QTPolicy


def test_parse_setting():
    assert decoding.parse_setting("trained") is None
    assert decoding.parse_setting("tau=0.9") == {"support_tau": 0.9, "prior_weight": 0.0}
    assert decoding.parse_setting("lambda=0.01") == {"support_tau": 0.0, "prior_weight": 0.01}
    assert decoding.parse_setting("tau=0.5,lambda=1e-2") == {"support_tau": 0.5, "prior_weight": 0.01}
    with pytest.raises(SystemExit, match="cannot read 'beta=1'"):
        decoding.parse_setting("beta=1")
    with pytest.raises(SystemExit, match="tau must be in"):
        decoding.parse_setting("tau=2")


def test_settings_are_evaluated_on_the_same_weights_and_reused(tmp_path, capsys):
    data, run, base = tmp_path / "data", tmp_path / "run", tmp_path / "bc"
    assert main(["make-dataset", "builtin", "--demos", "3", "--autonomous", "3", "--out", str(data)]) == 0
    common = ["--preset", "smoke", "--dataset", str(data), "--no-progress", "--steps", "4", "--eval-episodes", "0"]
    assert main(["train", *common, "--out", str(run), "--algo.imitation-weight", "1.0", "--algo.support-tau", "0.5"]) == 0
    assert main(["train", *common, "--out", str(base), "--algo.method", "bc"]) == 0
    args = decoding.Args(runs=(run,), settings=("trained", "tau=1", "lambda=0.05"), baselines=(base,), episodes=3, jobs=1,
                         out=tmp_path / "dec")
    summary = decoding.main(args)
    assert set(summary["settings"]) == {"trained", "tau=1", "lambda=0.05"} and len(summary["baselines"]) == 1
    for setting, kw in (("trained", {}), ("tau=1", {"support_tau": 1.0, "prior_weight": 0.0}), ("lambda=0.05", {"support_tau": 0.0, "prior_weight": 0.05})):
        expected = evaluate_policy(QTPolicy.from_checkpoint(run, **kw), None, 3)["success_rate"]
        assert summary["settings"][setting]["mean"] == pytest.approx(expected)
    evals = {json.loads(p.read_text())["setting"]: json.loads(p.read_text()) for p in (tmp_path / "dec" / "evals").glob("*-run__*")}
    assert (evals["trained"]["support_tau"], evals["tau=1"]["support_tau"], evals["lambda=0.05"]["prior_weight"]) == (0.5, 1.0, 0.05)
    assert "| tau=1 |" in (tmp_path / "dec" / "table.md").read_text()
    capsys.readouterr()
    decoding.main(args)  # everything on disk: nothing is evaluated again
    assert "4 evaluations, 4 done before, 0 to do" in capsys.readouterr().out
    other = decoding.main(dataclasses.replace(args, seed=5))  # other episodes: evaluated anew, into files of their own
    assert "4 evaluations, 0 done before, 4 to do" in capsys.readouterr().out
    assert other["settings"]["trained"]["mean"] == pytest.approx(evaluate_policy(QTPolicy.from_checkpoint(run), None, 3, seed=5)["success_rate"])
    assert len(list((tmp_path / "dec" / "evals").glob("*__seed5.json"))) == 4


def test_a_multi_task_evaluation_is_recorded_with_each_tasks_success(tmp_path, monkeypatch):
    """A multi-task environment's result has per-task rates and no mean length: both are written, nothing fails;
    --seed reaches the evaluation itself."""
    import qtransformer.evaluate
    import qtransformer.policy

    monkeypatch.setattr(qtransformer.policy.QTPolicy, "from_checkpoint", staticmethod(lambda run, **kw: type("P", (), {"support_tau": 0.0, "prior_weight": 0.01})()))
    seeds = []
    monkeypatch.setattr(qtransformer.evaluate, "evaluate_policy", lambda policy, env, episodes, seed=0: seeds.append(seed) or {
        "env_id": "metaworld:reach-v3,door-open-v3", "success_rate": 0.5, "mean_return": 0.0,
        "per_task": {"reach-v3": {"success_rate": 0.75, "episodes": 4}, "door-open-v3": {"success_rate": 0.25, "episodes": 4}}})
    spec = {"run": str(tmp_path / "run"), "setting": "trained", "decoding": None, "env": None, "episodes": 4, "seed": 1000,
            "result": str(tmp_path / "r.json")}
    out = decoding.evaluate_one(spec)
    assert out["per_task"] == {"reach-v3": 0.75, "door-open-v3": 0.25} and out["seed"] == 1000 and out["mean_length"] is None
    assert seeds == [1000]  # the episodes evaluated are the offset ones, not only the name of the file
    assert json.loads((tmp_path / "r.json").read_text())["success_rate"] == 0.5
