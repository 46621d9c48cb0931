"""Returns-to-go and n-step quantities (data/returns.py): hand-computed, loop reference, episode joins."""

from __future__ import annotations

import numpy as np
import pytest

from qtransformer.data.returns import episode_ends, n_step_returns, returns_to_go

# Two episodes, gamma = 0.5 (exact in binary floating point).
#   episode A: steps 0..2, rewards [0, 0, 1],        ends in a terminal (step 2)
#   episode B: steps 3..6, rewards [0.5, 0, 0, 0.25], ends in a timeout  (step 6)
REWARDS = np.array([0.0, 0.0, 1.0, 0.5, 0.0, 0.0, 0.25], dtype=np.float32)
TERMINALS = np.array([0, 0, 1, 0, 0, 0, 0], dtype=bool)
STARTS = np.array([0, 3, 7])
GAMMA = 0.5


def test_episode_ends():
    assert episode_ends(STARTS).tolist() == [3, 3, 3, 7, 7, 7, 7]


def test_returns_to_go_by_hand():
    g = returns_to_go(REWARDS, STARTS, GAMMA)
    # A: G2 = 1 ; G1 = 0 + 0.5*1 = 0.5 ; G0 = 0 + 0.5*0.5 = 0.25
    #    (had B leaked into A: G2 = 1 + 0.5*G3 = 1.265625)
    # B: G6 = 0.25 ; G5 = 0 + 0.5*0.25 = 0.125 ; G4 = 0 + 0.5*0.125 = 0.0625 ; G3 = 0.5 + 0.5*0.0625 = 0.53125
    expected = [0.25, 0.5, 1.0, 0.53125, 0.0625, 0.125, 0.25]
    assert g.dtype == np.float32
    assert g.tolist() == pytest.approx(expected, abs=1e-7)


def test_n_step_returns_by_hand_n2():
    out = n_step_returns(REWARDS, TERMINALS, STARTS, GAMMA, n=2)
    # m = min(2, steps left): A -> [2, 2, 1], B -> [2, 2, 2, 1]
    # reward = sum_{k<m} gamma^k r_{t+k}:
    #   t0: 0 + 0.5*0 = 0        t1: 0 + 0.5*1 = 0.5      t2: 1 (stops at A's end; not 1 + 0.5*0.5)
    #   t3: 0.5 + 0.5*0 = 0.5    t4: 0 + 0.5*0 = 0        t5: 0 + 0.5*0.25 = 0.125    t6: 0.25
    assert out["reward"].tolist() == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.125, 0.25], abs=1e-7)
    # discount = gamma^m: 0.25 for m = 2, 0.5 for m = 1
    assert out["discount"].tolist() == pytest.approx([0.25, 0.25, 0.5, 0.25, 0.25, 0.25, 0.5], abs=1e-7)
    # next_index = t + m - 1
    assert out["next_index"].tolist() == [1, 2, 2, 4, 5, 6, 6]
    # bootstrap = 0 iff the step at next_index is a terminal: steps 1 and 2 reach A's terminal;
    # B ends in a timeout, so it bootstraps everywhere
    assert out["bootstrap"].tolist() == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_n_step_returns_n1_is_one_step():
    out = n_step_returns(REWARDS, TERMINALS, STARTS, GAMMA, n=1)
    assert out["reward"].tolist() == pytest.approx(REWARDS.tolist())
    assert out["discount"].tolist() == pytest.approx([0.5] * 7)
    assert out["next_index"].tolist() == list(range(7))
    assert out["bootstrap"].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_n_step_larger_than_episode_stops_at_its_end():
    out = n_step_returns(REWARDS, TERMINALS, STARTS, GAMMA, n=10)
    # With n >= every episode length, the n-step reward is the full return-to-go and discount gamma^(left)
    assert out["reward"].tolist() == pytest.approx(returns_to_go(REWARDS, STARTS, GAMMA).tolist(), abs=1e-7)
    # steps left: A [3, 2, 1], B [4, 3, 2, 1]
    assert out["discount"].tolist() == pytest.approx([0.125, 0.25, 0.5, 0.0625, 0.125, 0.25, 0.5])
    assert out["next_index"].tolist() == [2, 2, 2, 6, 6, 6, 6]
    assert out["bootstrap"].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_n_step_rejects_n_below_one():
    with pytest.raises(ValueError):
        n_step_returns(REWARDS, TERMINALS, STARTS, GAMMA, n=0)


# -- plain-loop references ---------------------------------------------------------------------------
def loop_returns_to_go(rewards, starts, gamma):
    out = []
    for e in range(len(starts) - 1):
        for t in range(starts[e], starts[e + 1]):
            out.append(sum(gamma ** (k - t) * float(rewards[k]) for k in range(t, starts[e + 1])))
    return out


def loop_n_step(rewards, terminals, starts, gamma, n):
    reward, discount, next_index, bootstrap = [], [], [], []
    for e in range(len(starts) - 1):
        end = starts[e + 1]
        for t in range(starts[e], end):
            m = min(n, end - t)
            reward.append(sum(gamma**k * float(rewards[t + k]) for k in range(m)))
            discount.append(gamma**m)
            next_index.append(t + m - 1)
            bootstrap.append(0.0 if terminals[t + m - 1] else 1.0)
    return reward, discount, next_index, bootstrap


def random_episodes(rng, num_episodes):
    lengths = rng.integers(1, 9, size=num_episodes)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    rewards = rng.uniform(-1, 1, size=starts[-1]).astype(np.float32)
    terminals = np.zeros(starts[-1], bool)
    terminals[starts[1:] - 1] = rng.random(num_episodes) < 0.5  # each episode ends terminal or by timeout
    return rewards, terminals, starts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_returns_to_go_equals_plain_loop(seed):
    rng = np.random.default_rng(seed)
    rewards, _, starts = random_episodes(rng, 7)
    assert returns_to_go(rewards, starts, 0.9).tolist() == pytest.approx(loop_returns_to_go(rewards, starts, 0.9), abs=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_n_step_equals_plain_loop(seed, n):
    rng = np.random.default_rng(seed)
    rewards, terminals, starts = random_episodes(rng, 7)
    out = n_step_returns(rewards, terminals, starts, 0.9, n)
    reward, discount, next_index, bootstrap = loop_n_step(rewards, terminals, starts, 0.9, n)
    assert out["reward"].tolist() == pytest.approx(reward, abs=1e-5)
    assert out["discount"].tolist() == pytest.approx(discount, abs=1e-6)
    assert out["next_index"].tolist() == next_index
    assert out["bootstrap"].tolist() == bootstrap


@pytest.mark.parametrize("n", [1, 3])
def test_two_episodes_joined_equal_each_alone(n):
    rng = np.random.default_rng(5)
    ra, ta, _ = random_episodes(rng, 1)
    rb, tb, _ = random_episodes(rng, 1)
    la, lb = len(ra), len(rb)
    joined_starts = np.array([0, la, la + lb])
    rewards = np.concatenate([ra, rb])
    terminals = np.concatenate([ta, tb])

    g = returns_to_go(rewards, joined_starts, 0.9)
    ga = returns_to_go(ra, np.array([0, la]), 0.9)
    gb = returns_to_go(rb, np.array([0, lb]), 0.9)
    np.testing.assert_array_equal(g, np.concatenate([ga, gb]))

    j = n_step_returns(rewards, terminals, joined_starts, 0.9, n)
    a = n_step_returns(ra, ta, np.array([0, la]), 0.9, n)
    b = n_step_returns(rb, tb, np.array([0, lb]), 0.9, n)
    for key in ("reward", "discount", "bootstrap"):
        np.testing.assert_array_equal(j[key], np.concatenate([a[key], b[key]]))
    np.testing.assert_array_equal(j["next_index"], np.concatenate([a["next_index"], b["next_index"] + la]))


def test_joined_with_large_reward_next_door_does_not_leak():
    # Episode A alone has return 0 everywhere; a huge reward at the start of B must not reach it.
    rewards = np.array([0.0, 0.0, 100.0, 0.0], dtype=np.float32)
    terminals = np.array([0, 1, 0, 1], dtype=bool)
    starts = np.array([0, 2, 4])
    assert returns_to_go(rewards, starts, 0.99)[:2].tolist() == [0.0, 0.0]
    assert n_step_returns(rewards, terminals, starts, 0.99, 3)["reward"][:2].tolist() == [0.0, 0.0]
