"""Decoding and the deployable policy (policy.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from qtransformer.actions import ActionDiscretizer
from qtransformer.algo import QTransformerLearner
from qtransformer.config import AlgoConfig
from qtransformer.data import Batch
from qtransformer.policy import QTPolicy, decode, greedy_decode

OBS_DIM = 4


@pytest.mark.parametrize("d, K, num_tasks", [(1, 5, 1), (2, 3, 1), (3, 4, 1), (5, 3, 2)])
def test_kv_cached_decoding_equals_uncached(make_net, d, K, num_tasks):
    net = make_net(OBS_DIM, d, K, num_tasks=num_tasks, seed=d)
    obs = torch.randn(6, OBS_DIM)
    task = torch.randint(num_tasks, (6,)) if num_tasks > 1 else None
    bins_c, values_c = decode(net, obs, task, use_cache=True)
    bins_u, values_u = decode(net, obs, task, use_cache=False)
    assert bins_c.shape == (6, d) and values_c.shape == (6, d)
    assert torch.equal(bins_c, bins_u)
    torch.testing.assert_close(values_c, values_u, rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_tasks", [1, 2])
def test_straight_line_greedy_decoding_equals_decode(make_net, num_tasks):
    net = make_net(OBS_DIM, 4, 5, num_tasks=num_tasks, seed=7)
    obs = torch.randn(6, OBS_DIM)
    task = torch.randint(num_tasks, (6,)) if num_tasks > 1 else None
    with torch.inference_mode():
        bins_g, values_g = greedy_decode(net, obs, task)
    bins, values = decode(net, obs, task)
    assert torch.equal(bins_g, bins)
    torch.testing.assert_close(values_g, values, rtol=0, atol=1e-6)


def test_compiled_policy_acts_like_the_eager_one(make_net):
    net = make_net(OBS_DIM, 3, 5, seed=3)
    disc = ActionDiscretizer([-1.0, -1.0, 0.0], [1.0, 1.0, 10.0], 5)
    eager, compiled = QTPolicy(net, disc), QTPolicy(net, disc, compile=True)
    obs = np.random.default_rng(0).standard_normal((5, OBS_DIM)).astype(np.float32)
    np.testing.assert_array_equal(compiled.act(obs), eager.act(obs))
    np.testing.assert_array_equal(compiled.act(obs[0]), eager.act(obs[0]))  # another batch size: compiled again
    # exploration goes through the eager path with the same random numbers
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    np.testing.assert_array_equal(compiled.act(obs, epsilon=0.5, generator=g1), eager.act(obs, epsilon=0.5, generator=g2))


def enumerate_values(net, obs_row, d, K):
    """Teacher-forced values for every one of the K^d bin combinations: {combo: (d, K) values}."""
    combos = torch.tensor(list(itertools.product(range(K), repeat=d)))  # (K^d, d)
    with torch.no_grad():
        values = net(obs_row.expand(len(combos), -1), combos)  # (K^d, d, K)
    return {tuple(c.tolist()): v for c, v in zip(combos, values, strict=True)}


@pytest.mark.parametrize("d, K", [(2, 3), (3, 3), (3, 4)])
def test_greedy_decoding_is_sequential_argmax_over_all_combinations(make_net, d, K):
    net = make_net(OBS_DIM, d, K, seed=10 + d)
    obs = torch.randn(3, OBS_DIM)
    bins, chosen = decode(net, obs)
    for b in range(3):
        table = enumerate_values(net, obs[b : b + 1], d, K)
        prefix = []
        for i in range(d):
            # every combination starting with `prefix` gives the same values at dimension i (causality);
            # the greedy choice is their argmax
            rows = [v[i] for c, v in table.items() if list(c[:i]) == prefix]
            assert len(rows) == K ** (d - i)
            for r in rows[1:]:
                torch.testing.assert_close(r, rows[0], rtol=0, atol=1e-6)
            best = int(rows[0].argmax())
            assert bins[b, i].item() == best
            assert chosen[b, i].item() == pytest.approx(rows[0][best].item(), abs=1e-6)
            prefix.append(best)


def test_greedy_decoding_ranks_saturated_outputs_by_the_head_not_by_the_rounded_sigmoid(make_net):
    """A BC network's confident bins have head outputs far above 17, where float32's sigmoid is exactly
    1.0: bins 1 (output 25) and 3 (output 30) both get value 1.0. The greedy choice is bin 3, the larger
    output, not the lower index of a tie (what an argmax over the rounded values gives)."""
    d, K = 3, 5
    net = make_net(OBS_DIM, d, K)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([-3.0, 25.0, 0.0, 30.0, -1.0]))
    obs = torch.randn(4, OBS_DIM)
    assert torch.sigmoid(net.head.bias)[1] == torch.sigmoid(net.head.bias)[3] == 1.0  # the tie the argmax must not see
    for bins, chosen in (decode(net, obs), decode(net, obs, use_cache=False), greedy_decode(net, obs)):
        assert bins.tolist() == [[3] * d] * 4
        assert chosen.tolist() == [[1.0] * d] * 4


def test_greedy_decoding_finds_best_action_of_a_trained_one_state_bandit(make_net):
    """Train with the real learner on a one-state bandit, every one of the K^d = 9 actions in the data.

    Every transition is terminal, alpha = 0 and no MC bound, so the last dimension learns Q(a1, a2) = r and the
    first learns Q(a1) = max_a2 Q(a1, a2) (the per-dimension max backup). Rewards are chosen so that the best
    first bin by the mean over a2 (a1 = 0: mean 0.55) is not the best by the max (a1 = 2: max 0.9): only the
    max backup leads decoding to the best action (2, 0).
    """
    d, K = 2, 3
    combos = torch.tensor(list(itertools.product(range(K), repeat=d)))  # (9, 2)
    #                         a1 = 0            a1 = 1            a1 = 2
    rewards = torch.tensor([0.50, 0.55, 0.60, 0.10, 0.80, 0.70, 0.90, 0.05, 0.00])
    assert len(set(rewards.tolist())) == 9
    best = tuple(combos[int(rewards.argmax())].tolist())
    assert best == (2, 0)

    torch.manual_seed(0)
    net = make_net(3, d, K, seed=0)
    cfg = AlgoConfig(num_bins=K, alpha=0.0, mc_bound=False, tau=0.1, lr=1e-2, warmup_steps=0, weight_decay=0.0, grad_clip=0.0)
    learner = QTransformerLearner(net, cfg, "cpu")
    obs = torch.zeros(9, 3)
    batch = Batch(
        obs=obs,
        bins=combos,
        reward=rewards,
        discount=torch.full((9,), 0.9),
        bootstrap=torch.zeros(9),  # every transition is terminal
        next_obs=obs,
        mc_return=rewards,
    )
    for _ in range(250):
        learner.update(batch)
    trained = learner.online.eval()

    bins, _ = decode(trained, obs[:1])
    assert tuple(bins[0].tolist()) == best
    # brute force over the K^d combinations of the learned last-dimension values gives the same action
    table = enumerate_values(trained, obs[:1], d, K)
    brute = max(table, key=lambda c: table[c][d - 1, c[d - 1]].item())
    assert brute == best
    # and the first dimension holds the per-dimension max: Q(a1) ~ max_a2 r(a1, a2) = [0.6, 0.8, 0.9]
    first = trained.first_dim_values(obs[:1])[0]
    assert first.tolist() == pytest.approx([0.6, 0.8, 0.9], abs=0.05)


@pytest.fixture
def policy(make_net):
    net = make_net(OBS_DIM, 3, 5, seed=3)
    disc = ActionDiscretizer([-1.0, -1.0, 0.0], [1.0, 1.0, 10.0], 5)
    return QTPolicy(net, disc)


def test_act_single_and_batch(policy):
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((4, OBS_DIM)).astype(np.float32)
    batch_actions = policy.act(obs)
    assert batch_actions.shape == (4, 3)
    single = policy.act(obs[1])
    assert single.shape == (3,)
    np.testing.assert_allclose(single, batch_actions[1], atol=1e-6)
    # actions are the bin centres of the greedy bins
    bins, _ = decode(policy.net, torch.as_tensor(obs))
    np.testing.assert_allclose(batch_actions, policy.discretizer.decode(bins), atol=1e-6)
    centres = policy.discretizer.centres()
    for j in range(3):
        assert np.isin(batch_actions[:, j], centres[j]).all()
    with pytest.raises(ValueError):
        policy.act(np.zeros((2, OBS_DIM + 1), np.float32))


def test_epsilon_one_explores_reproducibly(policy):
    obs = np.random.default_rng(1).standard_normal((64, OBS_DIM)).astype(np.float32)
    greedy = policy.act(obs)
    a = policy.act(obs, epsilon=1.0, generator=torch.Generator().manual_seed(123))
    b = policy.act(obs, epsilon=1.0, generator=torch.Generator().manual_seed(123))
    np.testing.assert_array_equal(a, b)
    assert (a != greedy).any()  # uniform bins: 64 x 3 draws among 5 bins cannot all match the greedy ones
    # epsilon = 0 with a generator stays greedy
    np.testing.assert_array_equal(policy.act(obs, epsilon=0.0, generator=torch.Generator().manual_seed(5)), greedy)


def test_temperature_sampling_is_reproducible_and_varies(policy):
    obs = np.random.default_rng(2).standard_normal((64, OBS_DIM)).astype(np.float32)
    a = policy.act(obs, temperature=10.0, generator=torch.Generator().manual_seed(7))
    b = policy.act(obs, temperature=10.0, generator=torch.Generator().manual_seed(7))
    np.testing.assert_array_equal(a, b)
    assert (a != policy.act(obs)).any()


def test_q_values_are_the_greedy_actions_value_in_unit_interval(policy):
    obs = np.random.default_rng(3).standard_normal((5, OBS_DIM)).astype(np.float32)
    q = policy.q_values(obs)
    assert q.shape == (5,)
    assert np.all((q >= 0.0) & (q <= 1.0))
    bins, _ = decode(policy.net, torch.as_tensor(obs))
    with torch.no_grad():
        full = policy.net(torch.as_tensor(obs), bins)[:, -1].gather(1, bins[:, -1:]).squeeze(1)
    np.testing.assert_allclose(q, full.numpy(), atol=1e-6)
    q1 = policy.q_values(obs[2])
    assert np.ndim(q1) == 0 and q1 == pytest.approx(q[2], abs=1e-6)


def test_policy_on_multi_task_net_uses_task(make_net):
    net = make_net(OBS_DIM, 2, 4, num_tasks=3, seed=4)
    with torch.no_grad():
        net.task_embedding.weight.normal_(0.0, 3.0)
    pol = QTPolicy(net, ActionDiscretizer([-1, -1], [1, 1], 4))
    obs = np.random.default_rng(4).standard_normal((32, OBS_DIM)).astype(np.float32)
    with pytest.raises(ValueError, match="pass task="):  # a multi-task policy never guesses the task
        pol.act(obs)
    assert not np.array_equal(pol.act(obs, task=0), pol.act(obs, task=2))
    per_row = pol.act(obs, task=np.arange(32) % 3)
    np.testing.assert_array_equal(per_row[0::3], pol.act(obs[0::3], task=0))


def test_task_for_env_finds_a_metaworld_task_by_name(make_net):
    pol = QTPolicy(make_net(OBS_DIM, 2, 4, num_tasks=3, seed=4), ActionDiscretizer([-1, -1], [1, 1], 4),
                   {"task_names": ["reach-v3", "push-v3", "door-open-v3"]})
    assert pol.task_for_env("metaworld:push-v3") == 1
    assert pol.task_for_env("metaworld:push-v3", task=2) == 2  # an explicit task wins
    with pytest.raises(ValueError, match="not 'window-open-v3'"):
        pol.task_for_env("metaworld:window-open-v3")
    with pytest.raises(ValueError, match="--task"):
        pol.task_for_env("qtransformer/PointReach3D-v0")
    single = QTPolicy(make_net(OBS_DIM, 2, 4, seed=4), ActionDiscretizer([-1, -1], [1, 1], 4), {"task_names": ["reach"]})
    assert single.task_for_env("metaworld:push-v3") is None
