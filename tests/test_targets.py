"""Per-dimension Bellman backups (algo/targets.py) against numbers computed by hand, d = 2, K = 3."""

from __future__ import annotations

import pytest
import torch

from qtransformer.algo.targets import last_dim_td_target, per_dimension_td_targets


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# Two samples, d = 2 action dimensions, K = 3 bins.
# target_net_values[b, j, k] = Q_target_net(s, a^1..a^j from data, a^{j+1} = k).
TARGET_NET_VALUES = t(
    [
        [[0.10, 0.50, 0.30], [0.20, 0.70, 0.40]],  # sample 0: max of dim 0 is 0.5, max of dim 1 is 0.7
        [[0.90, 0.10, 0.10], [0.30, 0.20, 0.25]],  # sample 1: max of dim 0 is 0.9, max of dim 1 is 0.3
    ]
)
# next_values[b, k] = Q_target_net(s', a^1 = k): first-dimension values at the bootstrap state.
NEXT_VALUES = t([[0.30, 0.60, 0.20], [0.80, 0.50, 0.90]])  # maxima 0.6 and 0.9


def test_intermediate_dimension_takes_next_dimension_max_without_reward_or_discount():
    reward = t([0.10, 1.00])
    discount = t([0.90, 0.90])
    bootstrap = t([1.0, 1.0])
    y = per_dimension_td_targets(TARGET_NET_VALUES, NEXT_VALUES, reward, discount, bootstrap)
    assert y.shape == (2, 2)
    # dim 0 TD target = max_k target_net_values[b, 1, k]; no reward, no discount:
    #   sample 0: max(0.2, 0.7, 0.4) = 0.7   (not 0.5 = own max, not 0.1 + 0.9*0.7 = 0.73)
    #   sample 1: max(0.3, 0.2, 0.25) = 0.3  (not 0.9 = own max, not 1.0 + 0.9*0.3 = 1.27)
    assert y[:, 0].tolist() == pytest.approx([0.7, 0.3], abs=1e-12)


def test_last_dimension_is_reward_plus_discounted_max_at_next_state():
    reward = t([0.10, 0.00])
    discount = t([0.90, 0.90])
    bootstrap = t([1.0, 1.0])
    y = per_dimension_td_targets(TARGET_NET_VALUES, NEXT_VALUES, reward, discount, bootstrap)
    # sample 0: 0.1 + 0.9 * max(0.3, 0.6, 0.2) = 0.1 + 0.54  = 0.64
    # sample 1: 0.0 + 0.9 * max(0.8, 0.5, 0.9) = 0.0 + 0.81  = 0.81
    assert y[:, 1].tolist() == pytest.approx([0.64, 0.81], abs=1e-12)
    # the same quantity from the helper that computes it alone
    assert last_dim_td_target(reward, discount, bootstrap, NEXT_VALUES).tolist() == pytest.approx([0.64, 0.81], abs=1e-12)


def test_terminal_stops_bootstrap_and_timeout_does_not():
    reward = t([0.25, 0.25])
    discount = t([0.5, 0.5])
    # Same sample twice: row 0 ends in a terminal (bootstrap 0), row 1 in a timeout (bootstrap 1).
    tv = TARGET_NET_VALUES[[0, 0]]
    nv = NEXT_VALUES[[0, 0]]
    y = per_dimension_td_targets(tv, nv, reward, discount, t([0.0, 1.0]))
    # terminal: 0.25 + 0.5 * 0 * 0.6 = 0.25 ; timeout: 0.25 + 0.5 * 1 * 0.6 = 0.55
    assert y[:, 1].tolist() == pytest.approx([0.25, 0.55], abs=1e-12)
    # the intermediate dimension does not look at the bootstrap flag at all: max(0.2, 0.7, 0.4) = 0.7
    assert y[:, 0].tolist() == pytest.approx([0.7, 0.7], abs=1e-12)


def test_three_dimensions_each_takes_the_max_of_the_dimension_after_it():
    tv = t([[[0.1, 0.2, 0.3], [0.6, 0.4, 0.5], [0.05, 0.15, 0.12]]])  # (1, 3, 3)
    nv = t([[0.4, 0.2, 0.3]])
    y = per_dimension_td_targets(tv, nv, t([0.5]), t([0.5]), t([1.0]))
    # dim 0 -> max(dim 1) = 0.6 ; dim 1 -> max(dim 2) = 0.15 ; dim 2 -> 0.5 + 0.5 * 0.4 = 0.7
    assert y[0].tolist() == pytest.approx([0.6, 0.15, 0.7], abs=1e-12)


# n-step, by hand: gamma = 0.9, n = 2, data rewards r_t = 0.0 and r_{t+1} = 0.5, episode goes on.
#   R        = r_t + gamma * r_{t+1} = 0.0 + 0.9 * 0.5 = 0.45
#   discount = gamma^2 = 0.81
#   last dim = R + discount * max_k Q(s_{t+2}, k) = 0.45 + 0.81 * 0.6 = 0.45 + 0.486 = 0.936
NSTEP_R, NSTEP_DISCOUNT, NSTEP_LAST = 0.45, 0.81, 0.936


def test_n_step_last_dim_reading_keeps_per_dimension_max():
    y = per_dimension_td_targets(
        TARGET_NET_VALUES[:1], NEXT_VALUES[:1], t([NSTEP_R]), t([NSTEP_DISCOUNT]), t([1.0]), skip_dim_max=False
    )
    # dim 0 keeps max_k target_net_values[0, 1, k] = 0.7; dim 1 gets the n-step TD target 0.936
    assert y[0].tolist() == pytest.approx([0.7, NSTEP_LAST], abs=1e-12)


def test_n_step_all_dims_reading_skips_per_dimension_max():
    y = per_dimension_td_targets(
        TARGET_NET_VALUES[:1], NEXT_VALUES[:1], t([NSTEP_R]), t([NSTEP_DISCOUNT]), t([1.0]), skip_dim_max=True
    )
    # every dimension takes the n-step last-dimension TD target 0.936
    assert y[0].tolist() == pytest.approx([NSTEP_LAST, NSTEP_LAST], abs=1e-12)


def test_monte_carlo_bound_raises_a_low_td_target_and_leaves_a_higher_one_alone():
    reward = t([0.10, 0.00])
    discount = t([0.90, 0.90])
    bootstrap = t([1.0, 0.0])
    # Without the bound: sample 0 -> [0.7, 0.1 + 0.9*0.6 = 0.64]; sample 1 -> [0.3, 0.0 (terminal)]
    plain = per_dimension_td_targets(TARGET_NET_VALUES, NEXT_VALUES, reward, discount, bootstrap)
    assert plain.tolist() == [pytest.approx([0.7, 0.64], abs=1e-12), pytest.approx([0.3, 0.0], abs=1e-12)]
    mc = t([0.65, 0.20])
    y = per_dimension_td_targets(TARGET_NET_VALUES, NEXT_VALUES, reward, discount, bootstrap, mc_return=mc)
    # sample 0: max(0.7, 0.65) = 0.7 (left alone), max(0.64, 0.65) = 0.65 (raised)
    # sample 1: max(0.3, 0.2)  = 0.3 (left alone), max(0.0, 0.2)  = 0.2  (raised)
    assert y[0].tolist() == pytest.approx([0.7, 0.65], abs=1e-12)
    assert y[1].tolist() == pytest.approx([0.3, 0.2], abs=1e-12)


def test_monte_carlo_bound_applies_in_all_dims_reading_too():
    y = per_dimension_td_targets(
        TARGET_NET_VALUES[:1], NEXT_VALUES[:1], t([NSTEP_R]), t([NSTEP_DISCOUNT]), t([1.0]), mc_return=t([0.95]), skip_dim_max=True
    )
    # both dimensions: max(0.936, 0.95) = 0.95
    assert y[0].tolist() == pytest.approx([0.95, 0.95], abs=1e-12)


def test_td_targets_do_not_modify_inputs():
    tv, nv = TARGET_NET_VALUES.clone(), NEXT_VALUES.clone()
    per_dimension_td_targets(tv, nv, t([0.1, 0.2]), t([0.9, 0.9]), t([1.0, 0.0]), mc_return=t([0.5, 0.5]))
    assert torch.equal(tv, TARGET_NET_VALUES) and torch.equal(nv, NEXT_VALUES)


def test_single_action_dimension_is_plain_q_learning():
    tv = t([[[0.9, 0.8, 0.7]]])  # (1, 1, 3): no later dimension, so these values are not used
    nv = t([[0.1, 0.4, 0.2]])
    y = per_dimension_td_targets(tv, nv, t([0.5]), t([0.5]), t([1.0]))
    # 0.5 + 0.5 * 0.4 = 0.7
    assert y.shape == (1, 1)
    assert y[0, 0].item() == pytest.approx(0.7, abs=1e-12)
