"""Checkpoints (checkpoint.py): model/ round trip, policy rebuild, corruption errors, training state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qt_testutils import tiny_model_config
from qtransformer.actions import ActionDiscretizer
from qtransformer.algo import QTransformerLearner
from qtransformer.checkpoint import (
    CheckpointError,
    last_checkpoint,
    load_model,
    load_training_state,
    model_config,
    resolve_model_dir,
    save_checkpoint,
    save_model,
)
from qtransformer.config import AlgoConfig, TrainConfig
from qtransformer.data import TransitionSampler
from qtransformer.policy import QTPolicy

OBS_DIM, D, K = 4, 3, 5


@pytest.fixture
def saved(make_net, tmp_path):
    net = make_net(OBS_DIM, D, K, num_tasks=2, seed=7)
    net.encoder.set_normalizer(torch.tensor([0.5, -1.0, 2.0, 0.0]), torch.tensor([2.0, 0.25, 1.0, 3.0]))
    disc = ActionDiscretizer([-1.0, -2.0, 0.0], [1.0, 2.0, 5.0], K)
    meta = model_config(net, disc, tiny_model_config(), {"env_id": "some/Env-v0", "task_names": ["a", "b"]})
    model_dir = tmp_path / "model"
    save_model(model_dir, net, meta)
    return net, disc, model_dir


def test_save_load_identical_parameters_and_buffers(saved):
    net, disc, model_dir = saved
    loaded, disc2, meta = load_model(model_dir)
    sd, sd2 = net.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    # the observation normaliser is part of the model
    assert loaded.encoder.obs_mean.tolist() == [0.5, -1.0, 2.0, 0.0]
    assert loaded.encoder.obs_std.tolist() == [2.0, 0.25, 1.0, 3.0]
    np.testing.assert_array_equal(disc2.low, disc.low)
    np.testing.assert_array_equal(disc2.high, disc.high)
    assert disc2.num_bins == K
    assert meta["env_id"] == "some/Env-v0" and meta["task_names"] == ["a", "b"]
    assert not loaded.training


def test_policy_from_checkpoint_gives_identical_actions(saved):
    net, disc, model_dir = saved
    before = QTPolicy(net, disc)
    after = QTPolicy.from_checkpoint(model_dir)
    assert after.env_id == "some/Env-v0"
    obs = np.random.default_rng(0).standard_normal((16, OBS_DIM)).astype(np.float32) * 3
    for task in (0, 1):
        np.testing.assert_array_equal(after.act(obs, task=task), before.act(obs, task=task))
        np.testing.assert_array_equal(after.q_values(obs, task=task), before.q_values(obs, task=task))


def test_a_multi_task_policy_ranks_its_task_names_from_one_observation(saved):
    _, _, model_dir = saved
    policy = QTPolicy.from_checkpoint(model_dir)
    obs = np.random.default_rng(1).standard_normal(OBS_DIM).astype(np.float32)
    each = np.array([policy.q_values(obs, task=t) for t in (0, 1)])
    np.testing.assert_allclose(policy.q_values(obs, task=[0, 1]), each, rtol=0, atol=1e-6)  # one row per task id
    ranked = policy.rank_instructions(obs, ["b", "a"])
    assert sorted(ranked, key=lambda p: -p[1]) == ranked
    np.testing.assert_allclose(dict(ranked)["a"], each[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(dict(ranked)["b"], each[1], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="ranks its task names"):
        policy.rank_instructions(obs, ["open the drawer"])
    with pytest.raises(ValueError, match="3 task ids for 2 observations"):
        policy.q_values(np.stack([obs, obs]), task=[0, 1, 1])


def test_missing_model_folder_raises_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match="nowhere"):
        load_model(missing)
    with pytest.raises(CheckpointError, match="nowhere"):
        QTPolicy.from_checkpoint(missing)


def test_model_folder_without_weights_raises_naming_the_path(saved):
    _, _, model_dir = saved
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=str(model_dir)):
        load_model(model_dir)


def test_invalid_config_json_raises_naming_the_file(saved):
    _, _, model_dir = saved
    (model_dir / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(model_dir)


def test_wrong_format_version_raises(saved):
    _, _, model_dir = saved
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["format_version"] = 999
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="format_version"):
        load_model(model_dir)


def test_truncated_weights_raise_checkpoint_error_naming_the_file(saved):
    _, _, model_dir = saved
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])  # a crash mid-copy
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(model_dir)


def test_garbage_weights_raise_checkpoint_error_naming_the_file(saved):
    _, _, model_dir = saved
    (model_dir / "model.safetensors").write_bytes(b"this is not a safetensors file" * 4)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(model_dir)


def test_config_missing_a_field_raises_checkpoint_error(saved):
    _, _, model_dir = saved
    cfg = json.loads((model_dir / "config.json").read_text())
    del cfg["actions"]
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(model_dir)


def test_weights_missing_a_layer_for_config_raise(saved):
    _, _, model_dir = saved
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["model"]["n_layers"] = 2  # config asks for a block the weights do not have
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(model_dir)


def test_weights_of_wrong_shape_for_config_raise_checkpoint_error(saved):
    _, _, model_dir = saved
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["actions"]["num_bins"] = K + 1  # the head and bin table in the weights have K, not K + 1
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(model_dir)


# -- training_state/ and run folders -----------------------------------------------------------------
def make_learner_and_sampler(make_net, seed=0):
    net = make_net(OBS_DIM, D, K, seed=seed)
    learner = QTransformerLearner(net, AlgoConfig(num_bins=K, warmup_steps=2), "cpu")
    rng = np.random.default_rng(0)
    n = 12
    transitions = {
        "obs": rng.standard_normal((n, OBS_DIM)).astype(np.float32),
        "bins": rng.integers(0, K, (n, D)),
        "reward": rng.random(n).astype(np.float32),
        "discount": np.full(n, 0.98, np.float32),
        "bootstrap": np.ones(n, np.float32),
        "next_index": np.arange(n),
        "mc_return": rng.random(n).astype(np.float32),
        "task": np.zeros(n, np.int64),
        "next_observations": rng.standard_normal((n, OBS_DIM)).astype(np.float32),
    }
    # The sampler's seed is configuration (frozen on resume); what a checkpoint restores is how many
    # batches were drawn, so both samplers share seed 0.
    return learner, TransitionSampler(transitions, 4, "cpu", seed=0)


def test_training_state_round_trip_continues_identically(make_net, tmp_path):
    disc = ActionDiscretizer([-1] * D, [1] * D, K)
    learner, sampler = make_learner_and_sampler(make_net)
    for _ in range(3):
        learner.update(sampler.sample())
    meta = model_config(learner.online, disc, tiny_model_config())
    ckpt = save_checkpoint(tmp_path / "run", 3, learner, sampler, meta, TrainConfig())
    assert last_checkpoint(tmp_path / "run") == ckpt
    # continue the original for 2 more steps
    for _ in range(2):
        learner.update(sampler.sample())

    fresh, fresh_sampler = make_learner_and_sampler(make_net, seed=1)  # different init, sampler at batch 0
    state = load_training_state(ckpt, fresh, fresh_sampler)
    assert state["step"] == 3 and fresh.num_updates == 3
    for _ in range(2):
        fresh.update(fresh_sampler.sample())
    for a, b in zip(learner.online.state_dict().values(), fresh.online.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(learner.target_net.state_dict().values(), fresh.target_net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_keeps_this_machines_optimizer_kernel(make_net, tmp_path):
    """A checkpoint whose optimizer groups name another kernel (a GPU's fused AdamW, or none from an
    older version) resumes with the kernel the learner chose here."""
    disc = ActionDiscretizer([-1] * D, [1] * D, K)
    learner, sampler = make_learner_and_sampler(make_net)
    learner.update(sampler.sample())
    ckpt = save_checkpoint(tmp_path / "run", 1, learner, sampler, model_config(learner.online, disc, tiny_model_config()), TrainConfig())
    state_path = ckpt / "training_state" / "state.json"
    state = json.loads(state_path.read_text())
    here = {k: learner.optimizer.param_groups[0][k] for k in ("fused", "foreach")}
    for group in state["optimizer"]["param_groups"]:
        group["fused"], group["foreach"] = (None, True) if here["fused"] else (True, None)
    state_path.write_text(json.dumps(state))
    fresh, fresh_sampler = make_learner_and_sampler(make_net, seed=1)
    load_training_state(ckpt, fresh, fresh_sampler)
    assert all({k: g[k] for k in here} == here for g in fresh.optimizer.param_groups)
    fresh.update(fresh_sampler.sample())  # and it steps


def test_run_checkpoint_and_model_folders_all_resolve_and_old_ones_are_pruned(make_net, tmp_path):
    disc = ActionDiscretizer([-1] * D, [1] * D, K)
    learner, sampler = make_learner_and_sampler(make_net)
    meta = model_config(learner.online, disc, tiny_model_config())
    run = tmp_path / "run"
    for step in (1, 2, 3):
        learner.update(sampler.sample())
        final = save_checkpoint(run, step, learner, sampler, meta, TrainConfig(), keep=2)
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000002", "step_00000003"]
    assert (run / "checkpoints" / "last").read_text().strip() == "step_00000003"
    assert resolve_model_dir(run) == final / "model"
    assert resolve_model_dir(final) == final / "model"
    assert resolve_model_dir(final / "model") == final / "model"
    loaded, _, _ = load_model(run)
    for a, b in zip(learner.policy_net.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not list((run / "checkpoints").glob(".*tmp*"))  # no temporary folder left behind


def test_last_pointer_to_incomplete_checkpoint_raises(tmp_path):
    (tmp_path / "checkpoints" / "step_00000005").mkdir(parents=True)
    (tmp_path / "checkpoints" / "last").write_text("step_00000005\n")
    with pytest.raises(CheckpointError, match="step_00000005"):
        last_checkpoint(tmp_path)
    assert last_checkpoint(tmp_path / "elsewhere") is None
