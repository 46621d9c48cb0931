"""bench.finetune: the settings a user passes reach `qtransformer finetune`'s config, and runs made
without them keep matching their specs (so finished runs are reused)."""

import json
from pathlib import Path

import qtransformer.finetune as ft
from bench import finetune as bf


def test_online_fraction_reaches_the_finetune_config(monkeypatch, tmp_path: Path) -> None:
    seen = {}
    monkeypatch.setattr(ft, "finetune", lambda cfg: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(ft, "read_curve", lambda run_dir: [(0, 0.5)])
    spec = {"env_steps": 100, "updates_per_step": 0.02, "num_envs": 1, "eval_every": 50, "eval_episodes": 2, "seed": 0,
            "online_fraction": 0.0}
    curve = bf._finetune(spec, tmp_path / "offline", tmp_path / "run", scratch=False)
    assert curve == [[0, 0.5]]
    assert seen["cfg"].online_fraction == 0.0
    assert seen["cfg"].updates_per_step == 0.02
    del spec["online_fraction"]
    seen.clear()
    bf._finetune(spec, tmp_path / "offline", tmp_path / "run", scratch=False)
    assert seen["cfg"].online_fraction == ft.FinetuneConfig(checkpoint=Path(".")).online_fraction


def test_specs_name_the_online_fraction_only_when_set(monkeypatch, tmp_path: Path) -> None:
    captured: list[dict] = []

    def fake_pool(fn, specs, jobs, name):
        captured.extend(specs)
        return []

    import bench.compare

    monkeypatch.setattr(bench.compare, "run_in_pool", fake_pool)
    monkeypatch.setattr(bf, "offline_checkpoint", lambda out, seed, steps, prior=None: tmp_path)
    monkeypatch.setattr(bf, "summarize", lambda args, results: {})
    monkeypatch.setattr(bf, "markdown", lambda summary: "")
    monkeypatch.setattr(bf, "plot", lambda summary, path: None)
    for value in (None, 0.0):
        captured.clear()
        bf.main(bf.Args(out=tmp_path / "out", seeds=1, arms=("finetune",), online_fraction=value))
        assert len(captured) == 1
        assert ("online_fraction" in captured[0]) == (value is not None)
        if value is not None:
            assert captured[0]["online_fraction"] == value


def test_a_given_checkpoint_is_the_start_of_every_seed(monkeypatch, tmp_path: Path) -> None:
    import pytest

    import bench.compare

    start = tmp_path / "regime_run"
    monkeypatch.setattr(bf, "offline_checkpoint", lambda out, seed, steps, prior=None: pytest.fail("the built-in recipe ran"))
    monkeypatch.setattr(bf, "plot", lambda summary, path: None)
    seen = []
    monkeypatch.setattr(ft, "finetune", lambda cfg: seen.append(cfg))
    monkeypatch.setattr(ft, "read_curve", lambda run_dir: [(0, 0.5), (100, 0.75)])
    monkeypatch.setattr(bench.compare, "run_in_pool", lambda fn, specs, jobs, name: [fn(s) for s in specs])
    args = bf.Args(out=tmp_path / "out", seeds=2, arms=("finetune",), checkpoint=start, env="metaworld:push-v3", env_steps=100)
    bf.main(args)
    assert [c.checkpoint for c in seen] == [start, start]
    assert [c.env for c in seen] == ["metaworld:push-v3"] * 2 and [c.seed for c in seen] == [0, 1]
    assert all(c.dataset is None for c in seen)  # the checkpoint run's own dataset
    spec = json.loads((tmp_path / "out" / "runs" / "finetune_seed1.json").read_text())["spec"]
    assert spec["checkpoint"] == str(start) and "dataset" not in spec
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["gain"]["finetune"] == 0.25 and summary["protocol"]["task"] == "metaworld:push-v3"


def test_held_out_episodes_are_named_in_the_finetune_and_retrain_arms_specs_only(tmp_path: Path) -> None:
    args = bf.Args(checkpoint=tmp_path / "run", env="metaworld:door-open-v3", heldout_episodes=50)
    assert bf.optional_settings(args, "finetune") == {"checkpoint": str(tmp_path / "run"), "env": "metaworld:door-open-v3", "heldout_episodes": 50}
    assert bf.optional_settings(args, "retrain")["heldout_episodes"] == 50
    assert "heldout_episodes" not in bf.optional_settings(args, "scratch")  # its runs are reused with or without the flag


def test_retrain_from_a_given_checkpoint_trains_its_runs_recipe_anew_on_the_grown_data(tmp_path: Path, monkeypatch) -> None:
    """Each round: collect with the current checkpoint into a copy of the run's dataset, then train the run's
    own recipe (its config.json: preset, steps, bins) from a new initialisation on it."""
    from qtransformer.cli import main
    from qtransformer.data import EpisodeStore

    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["make-dataset", "builtin", "--demos", "4", "--autonomous", "4", "--out", str(data)]) == 0
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "20",
                 "--algo.num-bins", "6"]) == 0
    recipe, offline_data = bf.retrain_recipe({"seed": 3, "checkpoint": str(run)}, run)
    assert offline_data == data.resolve() and recipe.steps == 20 and recipe.algo.num_bins == 6 and recipe.seed == 3
    assert recipe.eval_episodes == 0 and recipe.threads == 1 and recipe.device == "auto"

    out = tmp_path / "bench"
    bf.main(bf.Args(out=out, seeds=1, arms=("retrain",), checkpoint=run, env_steps=60, rounds=2, eval_episodes=2, jobs=1))
    rounds = [json.loads((out / "runs" / "retrain_seed0" / f"round{k}" / "config.json").read_text()) for k in (1, 2)]
    assert [r["steps"] for r in rounds] == [20, 20] and all(r["algo"]["num_bins"] == 6 for r in rounds)
    assert rounds[1]["dataset"] == str((out / "runs" / "retrain_seed0" / "data").resolve())
    grown = EpisodeStore.open(out / "runs" / "retrain_seed0" / "data")
    assert grown.num_episodes > EpisodeStore.open(data).num_episodes and grown.num_steps >= EpisodeStore.open(data).num_steps + 60
    assert EpisodeStore.open(data).num_episodes == 8  # the run's own dataset is left as it was
    curve = json.loads((out / "runs" / "retrain_seed0.json").read_text())["curve"]
    assert len(curve) == 3 and curve[0][0] == 0 and curve[-1][0] >= 60

    import qtransformer.collect
    import qtransformer.train

    seen = []
    monkeypatch.setattr(qtransformer.collect, "collect", lambda policy, into, episodes, **kw: seen.append(kw) or {"steps": 10**6, "episodes": episodes})
    monkeypatch.setattr(qtransformer.train, "train", lambda cfg: run)
    spec = {"seed": 0, "checkpoint": str(run), "env_steps": 100, "rounds": 1, "eval_episodes": 1, "epsilon_start": 0.2, "temperature": 0.05}
    bf._retrain(spec, run, tmp_path / "explore")
    assert (seen[0]["epsilon"], seen[0]["temperature"]) == (0.2, 0.05)  # the retrain arm collects with the arms' exploration


def test_a_retrain_round_ends_less_than_one_episode_past_its_budget(monkeypatch, tmp_path: Path) -> None:
    """Episodes of 30 steps, rounds of 100 steps: each round stops within one episode of its budget (10
    episodes per call, as before, collected 300), and the reset seeds never repeat."""
    import qtransformer.collect
    import qtransformer.policy
    import qtransformer.train

    calls = []

    def fake_collect(policy, into, episodes, **kw):
        calls.append((episodes, kw["seed"]))
        return {"steps": 30 * episodes, "episodes": episodes}

    monkeypatch.setattr(qtransformer.collect, "collect", fake_collect)
    monkeypatch.setattr(qtransformer.train, "train", lambda cfg: tmp_path / "ckpt")
    monkeypatch.setattr(qtransformer.policy.QTPolicy, "from_checkpoint", staticmethod(lambda ckpt: None))
    from qtransformer.config import preset

    monkeypatch.setattr(bf, "retrain_recipe", lambda spec, offline: (preset("smoke"), tmp_path / "offline_data"))
    (tmp_path / "offline_data").mkdir()
    import qtransformer.evaluate

    monkeypatch.setattr(qtransformer.evaluate, "evaluate_policy", lambda *a, **k: {"success_rate": 0.0})
    curve = bf._retrain({"seed": 2, "env_steps": 200, "rounds": 2, "eval_episodes": 1}, tmp_path / "offline", tmp_path / "run")
    assert [steps for steps, _ in curve] == [0, 120, 210]  # budgets 100 and 200; at most one 30-step episode past each
    assert sum(n for n, _ in calls) == 7
    seeds = [seed + i for (n, seed) in calls for i in range(n)]
    assert seeds == list(range(2_000_000, 2_000_007))  # consecutive, none repeated


def test_the_exploration_settings_reach_every_arm(monkeypatch, tmp_path: Path) -> None:
    seen = {}
    monkeypatch.setattr(ft, "finetune", lambda cfg: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(ft, "read_curve", lambda run_dir: [(0, 0.5)])
    spec = {"env_steps": 100, "updates_per_step": 0.02, "num_envs": 1, "eval_every": 50, "eval_episodes": 2, "seed": 0,
            "epsilon_start": 0.3, "epsilon_end": 0.1, "temperature": 0.01}
    bf._finetune(spec, tmp_path / "offline", tmp_path / "run", scratch=True)
    assert (seen["cfg"].epsilon_start, seen["cfg"].epsilon_end, seen["cfg"].temperature) == (0.3, 0.1, 0.01)
    schedule = bf._schedule(spec)  # the retrain arm's collection follows the same schedule
    assert schedule.epsilon(0) == 0.3 and abs(schedule.epsilon(25) - 0.2) < 1e-9 and schedule.epsilon(50) == 0.1
    assert schedule.temperature == 0.01
    assert "epsilon_start" not in bf.optional_settings(bf.Args(), "finetune")


def test_the_offline_recipes_prior_is_named_only_when_given_and_a_start_without_it_is_not_reused(tmp_path: Path) -> None:
    """--prior auto: the built-in start trains the `builtin` preset's BC prior first and carries it (fine-tuning
    then decodes with it); a start made without a prior is trained again, not reused; retrain rounds train it too."""
    from qtransformer.policy import QTPolicy

    assert "prior" not in bf.optional_settings(bf.Args(), "finetune")
    assert bf.optional_settings(bf.Args(prior="auto"), "retrain")["prior"] == "auto"

    plain = bf.offline_checkpoint(tmp_path, 0, 5)
    assert not (plain / "prior").exists() and QTPolicy.from_checkpoint(plain).prior is None
    with_prior = bf.offline_checkpoint(tmp_path, 0, 5, "auto")
    assert (with_prior / "prior" / "checkpoints" / "last").exists() and QTPolicy.from_checkpoint(with_prior).prior is not None
    stamp = (with_prior / "config.json").stat().st_mtime_ns
    assert bf.offline_checkpoint(tmp_path, 0, 5, "auto") == with_prior and (with_prior / "config.json").stat().st_mtime_ns == stamp
    assert QTPolicy.from_checkpoint(with_prior).prior_weight == 0.03  # the builtin preset's
    made = json.loads((with_prior / "config.json").read_text())
    (with_prior / "config.json").write_text(json.dumps({k: v for k, v in made.items() if k != "prior_weight"}))  # a start from before the key (0.01)
    assert bf.offline_checkpoint(tmp_path, 0, 5, "auto") == with_prior and json.loads((with_prior / "config.json").read_text())["prior_weight"] == 0.03
    assert bf.recipe_prior_weight("auto") == {"prior_weight": 0.03} and bf.recipe_prior_weight(None) == {}

    spec = {"seed": 0, "offline_steps": 5, "out": str(tmp_path)}
    assert bf.retrain_recipe(spec, with_prior)[0].prior == "none"
    assert bf.retrain_recipe({**spec, "prior": "auto"}, with_prior)[0].prior == "auto"
