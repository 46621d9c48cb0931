"""distributed.py and the per-rank sampling, in one process (the torchrun runs: tests/e2e/test_torchrun.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from qt_testutils import tiny_model_config
from qtransformer import distributed
from qtransformer.actions import ActionDiscretizer
from qtransformer.config import AlgoConfig, ConfigError, TrainConfig
from qtransformer.data import EpisodeStore, TransitionSampler, build_transitions
from qtransformer.envs.builtin_dataset import make_builtin_dataset
from qtransformer.train import train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ds"
    EpisodeStore.create(path, make_builtin_dataset(demos=3, autonomous=5))
    return path


@pytest.fixture(scope="module")
def transitions(dataset):
    ds = EpisodeStore.open(dataset)
    return build_transitions(ds, ActionDiscretizer(ds.action_low, ds.action_high, 8), 0.98, 1)


def fields(batch):
    return {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch) if getattr(batch, f.name) is not None}


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("source_mix", [{}, {"demonstration": 0.5}])
def test_the_ranks_shards_make_up_the_single_process_batch(transitions, world_size, source_mix):
    whole = TransitionSampler(transitions, 16, "cpu", seed=5, source_mix=source_mix)
    shards = [TransitionSampler(transitions, 16, "cpu", seed=5, source_mix=source_mix, rank=r, world_size=world_size) for r in range(world_size)]
    for i in (0, 7):
        expected, parts = fields(whole.make_batch(i)), [fields(s.make_batch(i)) for s in shards]
        for name, value in expected.items():
            assert all(len(p[name]) == 16 // world_size for p in parts)
            joined = torch.empty_like(value)
            for r, p in enumerate(parts):
                joined[r::world_size] = p[name]  # rank r holds rows r, r + W, ...
            assert torch.equal(joined, value), name


def test_a_shard_is_a_pure_function_of_seed_rank_and_step(transitions):
    def shard(rank, step, prefetch=0):
        s = TransitionSampler(transitions, 16, "cpu", seed=5, rank=rank, world_size=2, prefetch=prefetch)
        s.set_state(step)  # a resumed sampler: one global counter
        try:
            return fields(s.sample())
        finally:
            s.close()

    a, b = shard(1, 3), shard(1, 3, prefetch=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(shard(0, 3)["obs"], a["obs"]) and not torch.equal(shard(1, 4)["obs"], a["obs"])


def test_a_batch_that_does_not_split_is_refused(transitions):
    with pytest.raises(ValueError, match="equal shards"):
        TransitionSampler(transitions, 15, "cpu", seed=0, rank=0, world_size=2)
    with pytest.raises(ConfigError, match="divisible by 2"):
        distributed.check_batch_size(15, 2)
    distributed.check_batch_size(16, 2)


def tiny_cfg(dataset, out, **overrides):
    cfg = TrainConfig(dataset=dataset, out=out, steps=2, batch_size=16, device="cpu", seed=3, log_every=1, eval_every=0, eval_episodes=0,
                      save_every=10, progress=False, model=tiny_model_config(), algo=AlgoConfig(num_bins=8, warmup_steps=1))
    return dataclasses.replace(cfg, **overrides)


def test_train_under_torchrun_refuses_a_global_batch_that_does_not_split(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ConfigError, match=r"batch_size: 15 \(the global batch\) does not split into 2 equal shards"):
        train(tiny_cfg(dataset, tmp_path / "run", batch_size=15))  # before joining any process group
    assert not (tmp_path / "run").exists()
    assert distributed.rank_label() == "rank 0: "


def test_without_torchrun_there_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ranks = distributed.from_env()
    assert (ranks.rank, ranks.world_size, ranks.enabled, ranks.is_main) == (0, 1, False, True)
    assert distributed.start(ranks, torch.device("cpu"), 60.0) == (ranks, torch.device("cpu"))
    assert distributed.rank_label() == ""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc-per-node 1: the single-process run
    assert not distributed.from_env().enabled
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="RANK=3"):
        distributed.from_env()


def test_the_failure_hook_acts_only_when_asked(monkeypatch):
    ranks = distributed.Ranks(rank=1, world_size=2)
    monkeypatch.delenv(distributed.FAIL_RANK_ENV, raising=False)
    distributed.fail_if_asked(ranks, 1)
    monkeypatch.setenv(distributed.FAIL_RANK_ENV, "0")
    distributed.fail_if_asked(ranks, 1)  # another rank's
    monkeypatch.setenv(distributed.FAIL_RANK_ENV, "1")
    distributed.fail_if_asked(ranks, 2)  # only after the first step
    with pytest.raises(RuntimeError, match="failure injected"):
        distributed.fail_if_asked(ranks, 1)


def test_threads_are_set_for_the_run_and_restored(dataset, tmp_path, monkeypatch):
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    before = torch.get_num_threads()
    train(tiny_cfg(dataset, tmp_path / "run", threads=2))
    assert calls == [2, before] and torch.get_num_threads() == before
    calls.clear()
    train(tiny_cfg(dataset, tmp_path / "run0", threads=0))  # 0: PyTorch's default, untouched
    assert calls == [before]
    with pytest.raises(ConfigError, match="threads"):
        tiny_cfg(dataset, tmp_path, threads=-1)


def test_single_process_batches_are_unchanged_by_sharding_support(transitions):
    """The default shard (rank 0 of 1) is the whole batch, so single-process runs draw what they drew before."""
    s = TransitionSampler(transitions, 16, "cpu", seed=5)
    idx = np.random.default_rng([5, 2]).integers(0, s.size, 16)
    assert torch.equal(s.make_batch(2).obs, torch.from_numpy(np.asarray(transitions["obs"].gather(idx))))
