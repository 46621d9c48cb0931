"""bench.prior: the BC prior's rule chosen on validation variations, read on the held-out ones."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from bench import prior, regime

TASK = "reach-v3"
# (setting, benchmark seed) -> success per seed 0, 1; the held-out figures of the runs themselves below
VALIDATION = {"tau=0": (0.30, 0.40), "tau=1": (0.90, 0.90), "tau=0.1": (0.30, 0.30), "lambda=0.01": (0.50, 0.60), "lambda=0.03": (0.50, 0.50)}
HELDOUT = {"lambda=0.01": (0.44, 0.38)}
OWN = {"qtransformer": (0.40, 0.36), "bc_demos": (0.30, 0.38)}


def fake_regime(root: Path, episodes: int) -> Path:
    """bench.regime's layout: run JSONs with their --final-episodes figures, and the kept final policies' folders."""
    for method, figures in OWN.items():
        for seed, x in enumerate(figures):
            run = root / "runs" / "demos1_auto2" / "main" / method / f"seed{seed}.json"
            (run.with_suffix("") / "checkpoints" / "step_00000004" / "model").mkdir(parents=True)
            fe = {"episodes": episodes, "evaluation": regime.EVALUATION, "success_rate": x, "per_task": {TASK: x}}
            run.write_text(json.dumps({"method": method, "seed": seed, "final_eval": fe}))
    return root


def test_the_rule_is_chosen_on_validation_among_the_candidates_and_read_on_the_held_out_episodes(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_success(values, prior_ckpt, setting, benchmark_seed, episodes):
        seed = int(Path(values).parts[-3][len("seed"):])
        assert "/main/bc_demos/" in prior_ckpt and "/qtransformer/" in values and Path(values).name == "step_00000004"
        key = next(s for s in [*VALIDATION, *HELDOUT] if prior.parse_setting(s) == setting)
        calls.append((key, benchmark_seed, episodes, seed))
        table = VALIDATION if benchmark_seed == 9999 else HELDOUT
        return {TASK: table[key][seed]}

    import qtransformer.workers

    monkeypatch.setattr(prior, "policy_success", fake_success)
    monkeypatch.setattr(qtransformer.workers, "process_pool", lambda n: ThreadPoolExecutor(1))  # runs see the fake
    root = fake_regime(tmp_path / "reg", episodes=3)
    args = prior.Args(regime=root, seeds=2, settings=("tau=0.1", "lambda=0.01", "lambda=0.03"), validation_episodes=2, episodes=3, jobs=1)
    prior.main(args)
    # the references (tau=0: the values alone, tau=1: the prior alone) are evaluated but never chosen,
    # even where one is best; only the chosen rule is evaluated on the held-out episodes
    assert sorted(c for c in calls if c[1] == 9999) == sorted((s, 9999, 2, k) for s in VALIDATION for k in (0, 1))
    assert sorted(c for c in calls if c[1] != 9999) == [("lambda=0.01", 7777, 3, 0), ("lambda=0.01", 7777, 3, 1)]
    summary = json.loads((root / "prior" / "summary.json").read_text())
    assert summary["chosen"] == "lambda=0.01"
    assert summary["validation"]["lambda=0.01"]["mean"] == pytest.approx(0.55) and not summary["validation"]["tau=1"]["candidate"]
    # paired per seed, in points: (0.44 - 0.40, 0.38 - 0.36) and (0.44 - 0.30, 0.38 - 0.38)
    vs_values, vs_prior = summary["paired"]["against qtransformer"], summary["paired"]["against bc_demos"]
    assert vs_values["per_seed"] == pytest.approx([4.0, 2.0]) and vs_values["mean"] == pytest.approx(3.0) and vs_values["se"] == pytest.approx(1.0)
    assert vs_prior["per_seed"] == pytest.approx([14.0, 0.0]) and vs_prior["mean"] == pytest.approx(7.0) and vs_prior["se"] == pytest.approx(7.0)
    assert "chosen: **lambda=0.01**" in (root / "prior" / "table.md").read_text()

    prior.main(args)  # every evaluation is on disk: nothing runs again
    assert len(calls) == 2 * len(VALIDATION) + 2 and "0 to do" in capsys.readouterr().out
    # the data-scaling runs decoded with main's BC runs (bench.regime trains no BC on demonstrations there)
    for seed, x in enumerate(OWN["qtransformer"]):
        run = root / "runs" / "demos1_auto2" / "scale_2x" / "qtransformer" / f"seed{seed}.json"
        (run.with_suffix("") / "checkpoints" / "step_00000004" / "model").mkdir(parents=True)
        run.write_text(json.dumps({"final_eval": {"episodes": 3, "evaluation": regime.EVALUATION, "success_rate": x, "per_task": {TASK: x}}}))
    with pytest.raises(SystemExit, match="no bc_demos seed 0 run on data 'scale_2x'"):
        prior.main(prior.Args(regime=root, data="scale_2x", seeds=2, settings=("lambda=0.01",), validation_episodes=2, episodes=3, jobs=1))
    del calls[:]
    prior.main(prior.Args(regime=root, data="scale_2x", prior_data="main", seeds=2, settings=("lambda=0.01",), validation_episodes=2, episodes=3, jobs=1))
    assert len(calls) == 3 * 2 + 2  # its own evaluations: nothing of main's is reused for other values
    scaled = json.loads((root / "prior" / "scale_2x_prior_main" / "summary.json").read_text())
    assert scaled["protocol"]["prior_data"] == "main" and scaled["chosen"] == "lambda=0.01"
    assert json.loads((root / "prior" / "summary.json").read_text())["protocol"]["data"] == "main"  # main's summary left as it was

    # another BC method as the prior: its own runs, its own folder
    with pytest.raises(SystemExit, match="no bc_all seed 0 run on data 'main'.*--methods qtransformer bc_all"):
        prior.main(prior.Args(regime=root, prior="bc_all", seeds=2, settings=("lambda=0.01",), validation_episodes=2, episodes=3, jobs=1))
    assert prior.folder(prior.Args(regime=root, prior="bc_all")) == "main_bc_all"
    assert prior.folder(prior.Args(regime=root, data="scale_2x", prior_data="main", prior="bc_all")) == "scale_2x_prior_main_bc_all"

    # another Q-Transformer method's runs as the values (--values): read from its own runs, written to its own folder
    with pytest.raises(SystemExit, match="no qt_nstep3_values seed 0 run on data 'main'.*--methods qt_nstep3_values bc_demos"):
        prior.main(prior.Args(regime=root, values="qt_nstep3_values", seeds=2, settings=("lambda=0.01",), validation_episodes=2, episodes=3, jobs=1))
    for seed, x in enumerate((0.20, 0.30)):
        run = root / "runs" / "demos1_auto2" / "main" / "qt_nstep3_values" / f"seed{seed}.json"
        (run.with_suffix("") / "checkpoints" / "step_00000004" / "model").mkdir(parents=True)
        run.write_text(json.dumps({"final_eval": {"episodes": 3, "evaluation": regime.EVALUATION, "success_rate": x, "per_task": {TASK: x}}}))
    del calls[:]

    def fake_other(values, *rest):  # the same figures, from the other method's policies
        assert "/main/qt_nstep3_values/" in values
        return fake_success(values.replace("/qt_nstep3_values/", "/qtransformer/"), *rest)

    monkeypatch.setattr(prior, "policy_success", fake_other)
    prior.main(prior.Args(regime=root, values="qt_nstep3_values", seeds=2, settings=("lambda=0.01",), validation_episodes=2, episodes=3, jobs=1))
    assert len(calls) == 3 * 2 + 2  # its own evaluations: nothing of qtransformer's is reused
    other = json.loads((root / "prior" / "main_qt_nstep3_values" / "summary.json").read_text())
    assert other["protocol"]["values"] == "qt_nstep3_values"
    assert other["paired"]["against qt_nstep3_values"]["per_seed"] == pytest.approx([24.0, 8.0])  # 0.44 - 0.20, 0.38 - 0.30
    assert prior.folder(prior.Args(regime=root, values="qt_nstep3_values", prior="bc_filtered")) == "main_bc_filtered_qt_nstep3_values"
    with pytest.raises(SystemExit, match="--values bc_all: not a Q-Transformer method"):
        prior.Args(regime=root, values="bc_all")

    with pytest.raises(SystemExit, match="--final-episodes 4"):  # the runs' own figures at another size are missing
        prior.main(prior.Args(regime=root, seeds=2, settings=("lambda=0.01",), validation_episodes=2, episodes=4, jobs=1))
    with pytest.raises(SystemExit, match="no qtransformer seed 2 run"):
        prior.main(prior.Args(regime=root, seeds=3, settings=("lambda=0.01",), validation_episodes=2, episodes=3, jobs=1))


def test_a_tie_goes_to_the_weaker_pull_and_bad_arguments_stop_early(tmp_path):
    assert prior.choose(["tau=0.1", "tau=0.03"], {"tau=0.1": 0.5, "tau=0.03": 0.5}) == "tau=0.03"
    assert prior.choose(["tau=0.01", "lambda=0.01"], {"tau=0.01": 0.5, "lambda=0.01": 0.5}) == "lambda=0.01"  # no cut is weaker than any
    assert prior.choose(["lambda=0.01", "lambda=0.003"], {"lambda=0.01": 0.51, "lambda=0.003": 0.5}) == "lambda=0.01"
    with pytest.raises(SystemExit, match="held-out set's"):
        prior.Args(regime=tmp_path, validation_seed=regime.EVAL_BENCHMARK_SEED)
    with pytest.raises(SystemExit, match="cannot read"):
        prior.Args(regime=tmp_path, settings=("beta=1",))


def test_policy_success_decodes_the_values_with_the_prior_on_the_asked_variations(tmp_path, monkeypatch):
    """The real policy_success on tiny trained runs: at tau 1 the values act as the prior does."""
    import dataclasses

    from qt_testutils import tiny_model_config
    from qtransformer import QTPolicy
    from qtransformer.config import AlgoConfig, TrainConfig
    from qtransformer.data import EpisodeStore
    from qtransformer.envs.builtin_dataset import make_builtin_dataset
    from qtransformer.train import train

    data = tmp_path / "ds"
    EpisodeStore.create(data, make_builtin_dataset(demos=3, autonomous=3))
    cfg = TrainConfig(dataset=data, out=tmp_path / "qt", steps=4, batch_size=16, device="cpu", log_every=2, eval_every=0, eval_episodes=0,
                      save_every=4, progress=False, model=tiny_model_config(), algo=AlgoConfig(num_bins=8, warmup_steps=2))
    qt = train(cfg)
    bc = train(dataclasses.replace(cfg, out=tmp_path / "bc", algo=AlgoConfig(num_bins=8, warmup_steps=2, method="bc")))
    names = list(QTPolicy.from_checkpoint(qt).meta.get("task_names") or [])
    assert names  # policy_success evaluates each task the policy knows
    obs = np.random.default_rng(0).normal(size=(8, QTPolicy.from_checkpoint(qt).net.obs_dim)).astype(np.float32)
    seen = []

    def fake_heldout(act, name, episodes, benchmark_seed):
        seen.append((name, episodes, benchmark_seed, act(obs)))
        return 0.5

    monkeypatch.setattr(regime, "heldout_success", fake_heldout)
    assert prior.policy_success(str(qt), str(bc), {"support_tau": 1.0, "prior_weight": 0.0}, 9999, 2) == {n: 0.5 for n in names}
    assert [s[:3] for s in seen] == [(n, 2, 9999) for n in names]
    np.testing.assert_array_equal(seen[0][3], QTPolicy.from_checkpoint(bc).act(obs))
    assert not np.array_equal(seen[0][3], QTPolicy.from_checkpoint(qt).act(obs))


def test_runs_that_carry_their_prior_are_labelled_so_and_their_prior_alone_is_read_on_the_held_out_episodes(tmp_path, monkeypatch):
    """Since train --prior, `default`'s runs decode with the BC prior they carry: their own figure is not
    the values alone, and that prior alone (BC on the demonstrations) is evaluated beside them."""
    calls = []

    def fake_success(values, prior_ckpt, setting, benchmark_seed, episodes):
        seed = int(Path(values).parts[-5 if Path(values).name == "prior" else -3][len("seed"):])
        calls.append((Path(values).name, prior_ckpt, setting, benchmark_seed, seed))
        if prior_ckpt is None:  # the carried prior, decoded as trained
            assert setting is None and Path(values).parent.name == "model"
            return {TASK: (0.20, 0.30)[seed]}
        return {TASK: 0.5}

    import qtransformer.workers

    monkeypatch.setattr(prior, "policy_success", fake_success)
    monkeypatch.setattr(qtransformer.workers, "process_pool", lambda n: ThreadPoolExecutor(1))
    root = fake_regime(tmp_path / "reg", episodes=3)
    args = prior.Args(regime=root, prior="bc_demos", seeds=2, settings=("lambda=0.01",), validation_episodes=2, episodes=3, jobs=1)
    prior.main(args)  # runs from before the prior: labelled as the values alone, nothing more evaluated
    summary = json.loads((root / "prior" / "summary.json").read_text())
    assert "`qtransformer` alone" in summary["heldout"] and not summary["protocol"]["values_carry_prior"]
    assert not [c for c in calls if c[1] is None] and len(summary["paired"]) == 2

    for seed in (0, 1):  # the same runs, now carrying their prior
        carried = root / "runs" / "demos1_auto2" / "main" / "qtransformer" / f"seed{seed}" / "checkpoints" / "step_00000004" / "model" / "prior"
        carried.mkdir(parents=True)
        (carried / "config.json").write_text("{}")
    del calls[:]
    prior.main(args)
    assert sorted(c for c in calls if c[1] is None) == [("prior", None, None, regime.EVAL_BENCHMARK_SEED, 0), ("prior", None, None, regime.EVAL_BENCHMARK_SEED, 1)]
    summary = json.loads((root / "prior" / "summary.json").read_text())
    assert summary["protocol"]["values_carry_prior"]
    rows = summary["heldout"]
    assert "`qtransformer` alone" not in rows and rows["`qtransformer` as run: its values with the prior it carries"]["mean"] == pytest.approx(0.38)
    assert rows["the prior `qtransformer` carries, alone"]["per_seed"] == pytest.approx([0.20, 0.30])
    # the run's own figures (0.40, 0.36) against its prior alone (0.20, 0.30), in points
    vs_carried = summary["paired"]["qtransformer as run, against its carried prior"]
    assert vs_carried["per_seed"] == pytest.approx([20.0, 6.0]) and vs_carried["mean"] == pytest.approx(13.0)
    assert "- qtransformer as run, against its carried prior: +13.0 points" in (root / "prior" / "table.md").read_text()
    del calls[:]
    prior.main(args)  # kept on disk: not evaluated again
    assert not [c for c in calls if c[1] is None]
