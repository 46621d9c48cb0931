"""The training loop (train.py): exact resume, and refusing to mix runs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from qt_testutils import tiny_model_config
from qtransformer.checkpoint import last_checkpoint
from qtransformer.config import AlgoConfig, ConfigError, TrainConfig
from qtransformer.data import EpisodeStore
from qtransformer.envs.builtin_dataset import make_builtin_dataset
from qtransformer.policy import QTPolicy
from qtransformer.train import train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ds"
    EpisodeStore.create(path, make_builtin_dataset(demos=3, autonomous=5))
    return path


def tiny_cfg(dataset, out, steps, resume=False, **overrides):
    cfg = TrainConfig(
        dataset=dataset,
        out=out,
        steps=steps,
        resume=resume,
        batch_size=16,
        device="cpu",
        seed=3,
        log_every=5,
        eval_every=0,
        eval_episodes=0,
        save_every=10,
        keep_checkpoints=0,
        progress=False,
        model=tiny_model_config(),
        algo=AlgoConfig(num_bins=8, warmup_steps=3, n_step=2),
    )
    return dataclasses.replace(cfg, **overrides)


def read_state(ckpt):
    return (
        load_file(str(ckpt / "model" / "model.safetensors")),
        load_file(str(ckpt / "training_state" / "target.safetensors")),
        load_file(str(ckpt / "training_state" / "optimizer.safetensors")),
        json.loads((ckpt / "training_state" / "state.json").read_text()),
    )


def assert_tensors_equal(a, b, what):
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k}"


def test_ten_plus_ten_with_resume_equals_twenty_straight(dataset, tmp_path):
    straight = train(tiny_cfg(dataset, tmp_path / "straight", 20))
    first = train(tiny_cfg(dataset, tmp_path / "resumed", 10))
    assert first.name == "step_00000010"
    resumed = train(tiny_cfg(dataset, tmp_path / "resumed", 20, resume=True))
    assert straight.name == resumed.name == "step_00000020"

    m1, t1, o1, s1 = read_state(straight)
    m2, t2, o2, s2 = read_state(resumed)
    assert_tensors_equal(m1, m2, "model")
    assert_tensors_equal(t1, t2, "target")
    assert_tensors_equal(o1, o2, "optimizer")
    assert s1["step"] == s2["step"] == 20 and s1["num_updates"] == s2["num_updates"] == 20
    assert s1["optimizer"] == s2["optimizer"]
    # the run really trained: the weights at step 20 differ from step 10
    m10 = load_file(str(first / "model" / "model.safetensors"))
    assert any(not torch.equal(m10[k], m2[k]) for k in m10)
    # the resumed run's final checkpoint gives a policy that acts like the straight one
    obs = EpisodeStore.open(dataset).to_dataset().observations[:8]
    assert (QTPolicy.from_checkpoint(tmp_path / "resumed").act(obs) == QTPolicy.from_checkpoint(tmp_path / "straight").act(obs)).all()


def test_new_run_in_a_used_folder_raises(dataset, tmp_path):
    train(tiny_cfg(dataset, tmp_path / "run", 2, save_every=100))
    with pytest.raises(ConfigError, match="resume"):
        train(tiny_cfg(dataset, tmp_path / "run", 4, save_every=100))


def test_resume_with_a_different_model_config_raises(dataset, tmp_path):
    train(tiny_cfg(dataset, tmp_path / "run", 2, save_every=100))
    with pytest.raises(ConfigError, match="model"):
        train(tiny_cfg(dataset, tmp_path / "run", 4, resume=True, save_every=100, model=tiny_model_config(d_model=32)))
    with pytest.raises(ConfigError, match="algo"):
        train(tiny_cfg(dataset, tmp_path / "run", 4, resume=True, save_every=100, algo=AlgoConfig(num_bins=16)))


def test_resume_without_a_checkpoint_raises(dataset, tmp_path):
    with pytest.raises(ConfigError, match="resume"):
        train(tiny_cfg(dataset, tmp_path / "empty", 2, resume=True))


def test_no_dataset_raises(tmp_path):
    with pytest.raises(ConfigError, match="dataset"):
        train(tiny_cfg(None, tmp_path / "run", 2))


def test_value_head_starts_at_the_datas_mean_return(dataset, tmp_path):
    """head_init='data_mean': the head's bias is logit(mean Monte-Carlo return), so a zero trunk output
    gives every bin that value; one step at a tiny learning rate leaves it there."""
    import numpy as np

    from qtransformer.actions import ActionDiscretizer
    from qtransformer.data import EpisodeStore, build_transitions

    algo = AlgoConfig(num_bins=8, warmup_steps=0, lr=1e-9, head_init="data_mean")
    final = train(tiny_cfg(dataset, tmp_path / "run", steps=1, algo=algo))
    ds = EpisodeStore.open(dataset)
    mean = float(np.mean(build_transitions(ds, ActionDiscretizer(ds.action_low, ds.action_high, 8), algo.gamma, 1)["mc_return"]))
    assert 0.01 < mean < 0.99
    net = QTPolicy.from_checkpoint(final).net
    start = net.values(torch.zeros(1, net.head.in_features))[0]  # (K,)
    torch.testing.assert_close(start, torch.full_like(start, mean), rtol=0, atol=1e-5)
    paper = train(tiny_cfg(dataset, tmp_path / "paper", steps=1, algo=dataclasses.replace(algo, head_init="default")))
    bias = QTPolicy.from_checkpoint(paper).net.head.bias
    assert (torch.sigmoid(bias) - mean).abs().max() > 0.05  # PyTorch's initialisation does not start there


def test_imitation_head_trains_saves_and_decodes_within_its_support(dataset, tmp_path):
    algo = AlgoConfig(num_bins=8, warmup_steps=3, imitation_weight=1.0, imitation_source="demonstration", support_tau=0.5)
    final = train(tiny_cfg(dataset, tmp_path / "run", steps=4, algo=algo))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("train/imitation_loss" in r for r in rows)
    policy = QTPolicy.from_checkpoint(final)
    assert policy.net.imitation_head is not None and policy.support_tau == 0.5
    with pytest.raises(ConfigError, match="no source 'human'"):
        train(tiny_cfg(dataset, tmp_path / "bad", steps=1, algo=dataclasses.replace(algo, imitation_source="human")))


@pytest.mark.parametrize("act_with", ["target", "online"])
def test_the_policy_acts_with_the_chosen_network(dataset, tmp_path, act_with):
    """model/ holds the network the policy acts with: by default the Polyak-averaged target network, whose
    weights training_state/target.safetensors also holds; the online network then goes beside it."""
    algo = AlgoConfig(num_bins=8, warmup_steps=3, act_with=act_with)
    final = train(tiny_cfg(dataset, tmp_path / "run", steps=10, algo=algo))
    model, target, _, _ = read_state(final)
    online_file = final / "training_state" / "online.safetensors"
    if act_with == "target":
        assert_tensors_equal(model, target, "model/ is the target network")
        online = load_file(str(online_file))
        assert any(not torch.equal(online[k], target[k]) for k in online)  # two different networks were saved
    else:
        assert not online_file.exists()
        assert any(not torch.equal(model[k], target[k]) for k in model)  # model/ is the online network


def test_negative_relabelling_trains_on_a_two_task_dataset(tmp_path, capsys):
    from qtransformer.cli import main
    from qtransformer.data import EpisodeStore
    from qtransformer.envs.builtin_dataset import make_builtin_dataset

    ds = make_builtin_dataset(3, 3, seed=0)
    ds.episode_task = np.arange(ds.num_episodes) % 2
    ds.task_names = ["reach-a", "reach-b"]
    EpisodeStore.create(tmp_path / "two", ds)
    EpisodeStore.create(tmp_path / "one", make_builtin_dataset(3, 3, seed=0))
    train = ["train", "--preset", "smoke", "--steps", "4", "--no-progress", "--eval-episodes", "0", "--negative-rate", "0.25"]
    assert main([*train, "--dataset", str(tmp_path / "two"), "--out", str(tmp_path / "run")]) == 0
    assert main([*train, "--dataset", str(tmp_path / "one"), "--out", str(tmp_path / "run1")]) == 2
    assert "at least two tasks" in capsys.readouterr().err


def test_eval_decodes_with_a_bc_runs_prior_and_refuses_a_prior_that_is_not_one(dataset, tmp_path, capsys, monkeypatch):
    """`eval --prior-checkpoint`: a BC run on the same data steers the trained values' argmax; the result
    records the rule; evaluation workers load the prior too (at support tau 1 they act as the BC run,
    where the values alone act otherwise); a prior that is not a BC run is refused in one line."""
    import contextlib

    import qtransformer.evaluate as evaluate
    import qtransformer.workers
    from qtransformer.cli import main

    qt = train(tiny_cfg(dataset, tmp_path / "qt", steps=4))
    bc = train(tiny_cfg(dataset, tmp_path / "bc", steps=4, algo=AlgoConfig(num_bins=8, warmup_steps=3, method="bc")))
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(qt), "--prior-checkpoint", str(bc), "--episodes", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["decoding"] == {"support_tau": 0.0, "prior_weight": 0.01, "prior_checkpoint": str(bc)}

    obs = np.random.default_rng(0).normal(size=(16, QTPolicy.from_checkpoint(qt).net.obs_dim)).astype(np.float32)
    acted = []  # what each worker's policy does on `obs`; the workers run in this process, the episodes are not run

    def actions_only(act, env_id, seeds, progress=False, make=None):
        acted.append(act(obs))
        return [{"seed": s, "success": False, "return": 0.0, "length": 1} for s in seeds]

    class InProcess:
        map = staticmethod(map)

    monkeypatch.setattr(evaluate, "run_episodes", actions_only)
    monkeypatch.setattr(qtransformer.workers, "process_pool", lambda n: contextlib.nullcontext(InProcess()))
    as_bc = QTPolicy.from_checkpoint(qt, prior_checkpoint=bc, support_tau=1.0, prior_weight=0.0)
    evaluate.evaluate_policy(as_bc, None, 2, workers=2)
    assert len(acted) == 2
    for a in acted:
        np.testing.assert_array_equal(a, QTPolicy.from_checkpoint(bc).act(obs))
    assert not np.array_equal(acted[0], QTPolicy.from_checkpoint(qt).act(obs))  # the prior made the difference

    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(bc), "--prior-checkpoint", str(qt), "--episodes", "1"]) != 0
    assert "must be a BC run on the same data (--algo.method bc)" in capsys.readouterr().err

    import qtransformer.collect

    used = []
    real_collect = qtransformer.collect.collect
    monkeypatch.setattr(qtransformer.collect, "collect", lambda policy, *a, **k: used.append(policy) or real_collect(policy, *a, **k))
    assert main(["collect", "--checkpoint", str(qt), "--prior-checkpoint", str(bc), "--into", str(tmp_path / "more"), "--episodes", "1"]) == 0
    assert used[0].prior is not None and used[0].prior.model_dir == QTPolicy.from_checkpoint(bc).model_dir and used[0].prior_weight == 0.01
    assert EpisodeStore.open(tmp_path / "more").to_dataset().num_episodes == 1


def test_a_run_with_a_prior_trains_the_bc_run_first_and_every_checkpoint_carries_it(dataset, tmp_path):
    """--prior demonstration: the BC run on the demonstrations (--algo.method bc --source-mix demonstration
    1.0, same settings and seed) is trained first into OUT/prior, every checkpoint carries its final
    network in model/prior/, the values network is the one a run without a prior trains, and the policy
    loads the prior and decodes with it at lambda 0.01, as `eval --prior-checkpoint` does with a separate run."""
    qt = train(tiny_cfg(dataset, tmp_path / "qt", 20, prior="demonstration"))
    plain = train(tiny_cfg(dataset, tmp_path / "plain", 20))
    bc = train(tiny_cfg(dataset, tmp_path / "bc", 20, algo=AlgoConfig(num_bins=8, warmup_steps=3, n_step=2, method="bc"),
                        source_mix={"demonstration": 1.0}))
    bc_weights = load_file(str(bc / "model" / "model.safetensors"))
    for step in ("step_00000010", "step_00000020"):
        assert_tensors_equal(load_file(str(tmp_path / "qt" / "checkpoints" / step / "model" / "prior" / "model.safetensors")), bc_weights, step)
    assert_tensors_equal(read_state(qt)[0], read_state(plain)[0], "the values network")
    assert json.loads((qt / "model" / "config.json").read_text())["prior"] == {"source": "demonstration", "weight": 0.01}

    obs = np.random.default_rng(0).normal(size=(32, QTPolicy.from_checkpoint(qt).net.obs_dim)).astype(np.float32)
    policy = QTPolicy.from_checkpoint(qt)
    assert policy.prior is not None and policy.prior_weight == 0.01 and policy.prior.model_dir == qt / "model" / "prior"
    np.testing.assert_array_equal(policy.act(obs), QTPolicy.from_checkpoint(plain, prior_checkpoint=bc).act(obs))
    as_bc = QTPolicy.from_checkpoint(qt, support_tau=1.0, prior_weight=0.0)  # the carried prior's own argmax
    np.testing.assert_array_equal(as_bc.act(obs), QTPolicy.from_checkpoint(bc).act(obs))
    without = QTPolicy.from_checkpoint(qt, prior_weight=0.0)  # both rules at 0: the plain argmax, the prior dropped
    assert without.prior is None
    np.testing.assert_array_equal(without.act(obs), QTPolicy.from_checkpoint(plain).act(obs))
    assert not np.array_equal(as_bc.act(obs), without.act(obs))  # the carried prior makes a difference


def test_the_priors_weight_is_trained_recorded_and_decoded_with(dataset, tmp_path, capsys, monkeypatch):
    """--prior-weight: the model config records it, the policy and eval decode at it (the same actions as
    the values with the BC run as a separate prior at that weight, others than at 0.01), the learner's
    targets take it with --algo.prior-in-targets; a model config without it (runs from before) decodes at
    0.01; a resume with another weight is refused; the builtin preset carries 0.03, the default 0.01."""
    import qtransformer.train as train_module
    from qtransformer.cli import main
    from qtransformer.config import preset

    seen = []
    real = train_module.QTransformerLearner
    monkeypatch.setattr(train_module, "QTransformerLearner", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    qt = train(tiny_cfg(dataset, tmp_path / "qt", 20, prior="demonstration", prior_weight=0.3,
                        algo=AlgoConfig(num_bins=8, warmup_steps=3, n_step=2, prior_in_targets=True)))
    assert seen[-1]["prior_weight"] == 0.3 and seen[-1]["prior_net"] is not None
    assert "the policy decodes by Q + 0.3 x log p_prior" in capsys.readouterr().out  # said when the prior starts
    config = qt / "model" / "config.json"
    assert json.loads(config.read_text())["prior"] == {"source": "demonstration", "weight": 0.3}
    policy = QTPolicy.from_checkpoint(qt)
    assert policy.prior_weight == 0.3
    obs = np.random.default_rng(0).normal(size=(64, policy.net.obs_dim)).astype(np.float32)
    prior = qt / "model" / "prior"
    np.testing.assert_array_equal(policy.act(obs), QTPolicy.from_checkpoint(qt, prior_checkpoint=prior, prior_weight=0.3).act(obs))
    at_001 = QTPolicy.from_checkpoint(qt, prior_weight=0.01).act(obs)
    assert not np.array_equal(policy.act(obs), at_001)  # the weight makes a difference on these observations
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(qt), "--episodes", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["decoding"]["prior_weight"] == 0.3

    meta = json.loads(config.read_text())
    meta["prior"].pop("weight")  # as a run from before --prior-weight wrote it
    config.write_text(json.dumps(meta))
    old = QTPolicy.from_checkpoint(qt)
    assert old.prior_weight == 0.01
    np.testing.assert_array_equal(old.act(obs), at_001)

    with pytest.raises(ConfigError, match=r"prior_weight \(saved 0.3, now 0.01\)"):
        train(tiny_cfg(dataset, tmp_path / "qt", 30, resume=True, prior="demonstration",
                       algo=AlgoConfig(num_bins=8, warmup_steps=3, n_step=2, prior_in_targets=True)))
    with pytest.raises(ConfigError, match="prior_weight"):
        tiny_cfg(dataset, tmp_path / "zero", 4, prior="demonstration", prior_weight=0.0)
    assert preset("builtin").prior_weight == 0.03 and preset("default").prior_weight == 0.01 and preset("large").prior_weight == 0.01


def test_prior_sources_and_data_without_demonstrations(dataset, tmp_path, capsys):
    """'successful' trains filtered BC; 'auto-successful' (the default preset's) is the same on data with
    demonstrations and 'auto' the demonstrations' BC; both on data without demonstrations train no prior and
    say so; 'demonstration' there is refused in one line; BC runs take no prior."""
    from qtransformer.config import preset
    from qtransformer.train import prior_config

    succ_run = train(tiny_cfg(dataset, tmp_path / "succ", 4, prior="successful"))
    prior_cfg = json.loads((tmp_path / "succ" / "prior" / "config.json").read_text())
    assert prior_cfg["only_successful"] is True and prior_cfg["source_mix"] == {} and prior_cfg["algo"]["method"] == "bc"
    assert json.loads((succ_run / "model" / "config.json").read_text())["prior"] == {"source": "successful", "weight": 0.01}
    succ = prior_config(tiny_cfg(dataset, tmp_path / "as", 4, prior="auto-successful"))
    assert (succ.only_successful, succ.source_mix, succ.algo.method, succ.prior) == (True, {}, "bc", "none")
    demos = prior_config(tiny_cfg(dataset, tmp_path / "a", 4, prior="auto"))
    assert (demos.only_successful, demos.source_mix) == (False, {"demonstration": 1.0})
    assert preset("default").prior == preset("large").prior == "auto-successful" and preset("builtin").prior == "auto"

    no_demos = tmp_path / "no_demos"
    EpisodeStore.create(no_demos, make_builtin_dataset(demos=0, autonomous=6))
    capsys.readouterr()
    train(tiny_cfg(no_demos, tmp_path / "auto", 4, prior="auto"))
    assert "has no demonstrations; training without a BC prior" in capsys.readouterr().out
    assert not (tmp_path / "auto" / "prior").exists() and QTPolicy.from_checkpoint(tmp_path / "auto").prior is None
    assert prior_config(tiny_cfg(no_demos, tmp_path / "as", 4, prior="auto-successful")) is None
    assert "prior auto-successful: " in capsys.readouterr().out
    failed = make_builtin_dataset(demos=2, autonomous=2, progress=False)
    failed.rewards[:] = 0.0  # demonstrations, and no episode that succeeded
    EpisodeStore.create(tmp_path / "failed", failed)
    assert prior_config(tiny_cfg(tmp_path / "failed", tmp_path / "f", 4, prior="auto-successful")).source_mix == {"demonstration": 1.0}
    assert "no successful episode; the BC prior imitates the demonstrations" in capsys.readouterr().out
    from qtransformer.distributed import Ranks
    from qtransformer.train import _train_prior

    _train_prior(tiny_cfg(no_demos, tmp_path / "rank1", 4, prior="auto"), Ranks(rank=1, world_size=2), torch.device("cpu"))
    assert capsys.readouterr().out == ""  # under torchrun the line is rank 0's alone
    with pytest.raises(ConfigError, match="has no episode with source 'demonstration'; pass --prior successful"):
        train(tiny_cfg(no_demos, tmp_path / "demos", 4, prior="demonstration"))
    train(tiny_cfg(dataset, tmp_path / "bc", 4, prior="auto", algo=AlgoConfig(num_bins=8, warmup_steps=3, method="bc")))
    assert not (tmp_path / "bc" / "prior").exists()


def test_a_run_with_a_prior_resumes_in_the_prior_or_after_it(dataset, tmp_path):
    """Killed after the prior (or half-way through it), --resume continues where it stopped and ends with
    the same networks as a run straight through; without --resume the folder is refused."""
    from qtransformer.train import prior_config

    straight = train(tiny_cfg(dataset, tmp_path / "straight", 20, prior="demonstration"))
    train(prior_config(tiny_cfg(dataset, tmp_path / "killed", 10, prior="demonstration")))  # the prior half-way, no main run yet
    with pytest.raises(ConfigError, match="prior: holds a run already; pass --resume"):
        train(tiny_cfg(dataset, tmp_path / "killed", 20, prior="demonstration"))
    train(tiny_cfg(dataset, tmp_path / "killed", 10, prior="demonstration", resume=True))  # the prior to 10, then the main run
    resumed = train(tiny_cfg(dataset, tmp_path / "killed", 20, prior="demonstration", resume=True))  # both to 20
    assert_tensors_equal(read_state(straight)[0], read_state(resumed)[0], "the values network")
    assert_tensors_equal(load_file(str(straight / "model" / "prior" / "model.safetensors")),
                         load_file(str(resumed / "model" / "prior" / "model.safetensors")), "the prior")


def test_resuming_with_another_prior_is_refused_before_anything_trains(dataset, tmp_path):
    """A run trained without a prior (or one from before --prior: its config has no such key) resumed with
    a prior, or the other way round, is refused in one line before a prior is trained; a BC run ignores
    --prior, so resuming it with another is not a difference."""
    out = tmp_path / "run"
    train(tiny_cfg(dataset, out, 10))
    with pytest.raises(ConfigError, match=r"cannot resume with different settings: prior \(saved 'none', now 'demonstration'\)"):
        train(tiny_cfg(dataset, out, 20, prior="demonstration", resume=True))
    assert not (out / "prior").exists()  # refused before the prior's run started
    state = last_checkpoint(out) / "training_state" / "state.json"
    saved = json.loads(state.read_text())
    del saved["train_config"]["prior"]  # as a run from before --prior wrote it
    state.write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="prior \\(saved 'none', now 'auto'\\)"):
        train(tiny_cfg(dataset, out, 20, prior="auto", resume=True))
    assert train(tiny_cfg(dataset, out, 20, resume=True)).name == "step_00000020"  # the same settings resume

    with_prior = tmp_path / "with_prior"
    train(tiny_cfg(dataset, with_prior, 10, prior="demonstration"))
    with pytest.raises(ConfigError, match="prior \\(saved 'demonstration', now 'none'\\)"):
        train(tiny_cfg(dataset, with_prior, 20, resume=True))

    bc = tmp_path / "bc"
    train(tiny_cfg(dataset, bc, 10, algo=AlgoConfig(num_bins=8, warmup_steps=3, n_step=2, method="bc"), prior="auto"))
    assert train(tiny_cfg(dataset, bc, 20, algo=AlgoConfig(num_bins=8, warmup_steps=3, n_step=2, method="bc"), resume=True)).name == "step_00000020"


def test_prior_in_targets_trains_the_values_on_the_priors_choice_and_needs_a_prior(dataset, tmp_path):
    """--algo.prior-in-targets: the same BC prior is trained first and carried; the values network then
    trains on other targets than a run without it; a run that trains no prior is refused in one line."""
    algo = AlgoConfig(num_bins=8, warmup_steps=3, n_step=2, prior_in_targets=True)
    in_targets = train(tiny_cfg(dataset, tmp_path / "in_targets", 10, prior="demonstration", algo=algo))
    decoding_only = train(tiny_cfg(dataset, tmp_path / "decoding_only", 10, prior="demonstration"))
    assert_tensors_equal(load_file(str(in_targets / "model" / "prior" / "model.safetensors")),
                         load_file(str(decoding_only / "model" / "prior" / "model.safetensors")), "the prior")
    a, b = read_state(in_targets)[0], read_state(decoding_only)[0]
    assert any(not torch.equal(a[k], b[k]) for k in a), "the targets should differ, and with them the trained values"
    assert QTPolicy.from_checkpoint(in_targets).prior is not None
    with pytest.raises(ConfigError, match="--algo.prior-in-targets needs a BC prior, and this run trains none"):
        train(tiny_cfg(dataset, tmp_path / "no_prior", 10, algo=algo))
