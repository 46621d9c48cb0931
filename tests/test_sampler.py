"""Training transitions and the sampler (data/sampler.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qtransformer.actions import ActionDiscretizer
from qtransformer.data import Batch, EpisodeDataset, TransitionSampler, build_transitions


def make_ds():
    # observations carry the step index, so a sampled row tells which step it came from
    def ep(first, length, end, rewards):
        obs = np.arange(first, first + length + 1, dtype=np.float32)[:, None].repeat(2, 1)
        obs[:, 1] = 0.0
        return {
            "observations": obs[:-1],
            "next_observations": obs[1:] + np.array([0.0, 0.5], np.float32),  # tag: next observation
            "actions": np.linspace(-1, 1, length * 2, dtype=np.float32).reshape(length, 2),
            "rewards": np.asarray(rewards, np.float32),
            "terminals": np.eye(length, dtype=bool)[-1] if end == "terminal" else np.zeros(length, bool),
            "timeouts": np.eye(length, dtype=bool)[-1] if end == "timeout" else np.zeros(length, bool),
            "source": "demonstration",
        }

    # episode A: steps 0..2 terminal, rewards [0, 0, 1]; episode B: steps 3..5 timeout, rewards [0, 0.5, 0]
    return EpisodeDataset.from_episodes(
        [ep(0, 3, "terminal", [0, 0, 1]), ep(10, 3, "timeout", [0, 0.5, 0])], [-1, -1], [1, 1]
    )


def test_build_transitions_by_hand():
    ds = make_ds()
    disc = ActionDiscretizer([-1, -1], [1, 1], 4)
    tr = build_transitions(ds, disc, gamma=0.5, n_step=2)
    np.testing.assert_array_equal(tr["bins"], disc.encode(ds.actions))
    # n = 2, gamma = 0.5
    # A: t0: 0 + .5*0 = 0 ; t1: 0 + .5*1 = .5 ; t2: 1     B: t3: 0 + .5*.5 = .25 ; t4: .5 + .5*0 = .5 ; t5: 0
    assert tr["reward"].tolist() == pytest.approx([0.0, 0.5, 1.0, 0.25, 0.5, 0.0])
    assert tr["discount"].tolist() == pytest.approx([0.25, 0.25, 0.5, 0.25, 0.25, 0.5])
    assert tr["next_index"].tolist() == [1, 2, 2, 4, 5, 5]
    assert tr["bootstrap"].tolist() == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    # returns-to-go: A [0.25, 0.5, 1], B [0.25, 0.5, 0]
    assert tr["mc_return"].tolist() == pytest.approx([0.25, 0.5, 1.0, 0.25, 0.5, 0.0])


def test_sampled_next_obs_is_the_bootstrap_state():
    ds = make_ds()
    tr = build_transitions(ds, ActionDiscretizer([-1, -1], [1, 1], 4), gamma=0.5, n_step=2)
    sampler = TransitionSampler(tr, batch_size=64, device="cpu", seed=0)
    batch = sampler.sample()
    assert batch.obs.shape == (64, 2) and batch.bins.shape == (64, 2) and batch.next_obs.shape == (64, 2)
    # obs[:, 0] is the step's label: A steps are 0, 1, 2 and B steps are 10, 11, 12.
    # The bootstrap state s_{t+m} is next_observations[t + m - 1], labelled obs + m with tag 0.5.
    m = {0: 2, 1: 2, 2: 1, 10: 2, 11: 2, 12: 1}
    for o, n in zip(batch.obs.tolist(), batch.next_obs.tolist(), strict=True):
        assert n == [o[0] + m[int(o[0])], 0.5]
    assert len({int(o) for o in batch.obs[:, 0].tolist()}) == 6  # 64 draws cover all 6 steps


def test_sampler_is_reproducible_from_its_seed_and_state():
    tr = build_transitions(make_ds(), ActionDiscretizer([-1, -1], [1, 1], 4), gamma=0.9, n_step=1)
    a = TransitionSampler(tr, 8, "cpu", seed=3)
    b = TransitionSampler(tr, 8, "cpu", seed=3)
    for _ in range(3):
        ba, bb = a.sample(), b.sample()
        for (ka, ta), (kb, tb) in zip(ba.tensors(), bb.tensors(), strict=True):
            assert ka == kb and torch.equal(ta, tb)
    state = a.state()
    next_a = a.sample()
    c = TransitionSampler(tr, 8, "cpu", seed=3)
    c.set_state(state)
    assert torch.equal(next_a.obs, c.sample().obs)
    assert not torch.equal(next_a.obs, TransitionSampler(tr, 8, "cpu", seed=3).sample().obs)


def test_a_batch_is_frozen_and_moves_whole():
    batch = Batch(
        obs=torch.zeros(2, 3), bins=torch.zeros(2, 1, dtype=torch.long), reward=torch.zeros(2), discount=torch.ones(2),
        bootstrap=torch.ones(2), next_obs=torch.zeros(2, 3), mc_return=torch.zeros(2),
        images={"cam": torch.zeros(2, 4, 4, 3, dtype=torch.uint8)}, next_images={"cam": torch.zeros(2, 4, 4, 3, dtype=torch.uint8)},
    )
    with pytest.raises(AttributeError):
        batch.obs = torch.ones(2, 3)
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and moved.task is None and moved.imitate is None
    assert [name for name, _ in moved.tensors()] == [
        "obs", "bins", "reward", "discount", "bootstrap", "next_obs", "mc_return", "images/cam", "next_images/cam",
    ]


def _two_task_transitions(n: int = 40):
    task = np.repeat([0, 1], n // 2)
    return {
        "bins": np.zeros((n, 2), np.int64), "reward": np.full(n, 0.5, np.float32), "discount": np.full(n, 0.98, np.float32),
        "bootstrap": (np.arange(n) % 5 != 4).astype(np.float32), "mc_return": np.full(n, 0.7, np.float32), "task": task,
        "next_index": np.arange(n), "source": np.zeros(n, np.int64), "source_labels": ["a"], "successful": np.ones(n, bool),
        "obs": np.arange(n, dtype=np.float32)[:, None], "next_observations": np.arange(n, dtype=np.float32)[:, None],
    }


def test_negative_relabelling_relabels_the_last_rows_only():
    tr = _two_task_transitions()
    s = TransitionSampler(tr, 8, "cpu", seed=0, negative_rate=0.5)
    for i in range(5):
        b = s.make_batch(i)
        step = b.obs[:, 0].long().numpy()  # obs holds the step index
        assert np.array_equal(b.task[:4].numpy(), tr["task"][step[:4]]) and torch.all(b.reward[:4] == 0.5)  # untouched
        assert np.all(b.task[4:].numpy() != tr["task"][step[4:]])  # another task's label
        assert torch.all(b.reward[4:] == 0) and torch.all(b.mc_return[4:] == 0)
        assert np.array_equal(b.bootstrap[4:].numpy(), tr["bootstrap"][step[4:]])  # a terminal stays a terminal
        assert torch.equal(b.task, s.make_batch(i).task)  # a pure function of (seed, i)
    # a language model: conditioning ids are instructions; 0 and 1 belong to task 0, 2 to task 1
    tr["task"] = np.repeat([0, 1, 2], [10, 10, 20])
    s = TransitionSampler(tr, 16, "cpu", seed=1, negative_rate=0.25, condition_groups=np.array([0, 0, 1]))
    b = s.make_batch(0)
    step = b.obs[:, 0].long().numpy()
    for j in range(12, 16):
        wanted = {2} if tr["task"][step[j]] < 2 else {0, 1}  # an instruction of the other task
        assert b.task[j].item() in wanted
    tr["task"] = np.zeros(40, np.int64)
    with pytest.raises(ValueError, match="at least two tasks"):
        TransitionSampler(tr, 8, "cpu", seed=0, negative_rate=0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs a CUDA device")
def test_batches_for_a_gpu_come_from_pinned_memory():
    ds_tr = _two_task_transitions()
    s = TransitionSampler(ds_tr, 8, "cuda", seed=0)
    assert s._prepared(0).obs.is_pinned() and s.sample().obs.is_cuda
