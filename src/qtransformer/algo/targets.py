"""Per-dimension Bellman backups, the TD targets, as pure functions of tensors (no network calls inside).

Notation: d action dimensions (0-based j = 0..d-1 here, 1..d in the paper), K bins, batch B.
`target_net_values[b, j, k]` is the target network's Q(s, a^1..a^j from the data, a^{j+1} = k), and
`next_values[b, k]` its first-dimension Q(s', a^1 = k) at the bootstrap state. The TD targets y:

    j < d-1:  y_j = max_k target_net_values[:, j+1, k]                (no reward, no discount)
    j = d-1:  y_j = R + discount * bootstrap * max_k next_values[:, k]

R is the (n-step) discounted reward sum, `discount` is gamma**m for the m <= n rewards it holds, and
`bootstrap` is 0 after a terminal (the episode really ended) and 1 otherwise, a timeout included.
In the 'all_dims' n-step reading, every dimension takes the last dimension's TD target (skipping the
per-dimension maxima). The Monte-Carlo bound replaces every y_j by max(y_j, G), G the data episode's
discounted return-to-go from this step.
"""

from __future__ import annotations

from typing import Optional

import torch


def last_dim_td_target(
    reward: torch.Tensor, discount: torch.Tensor, bootstrap: torch.Tensor, next_values: torch.Tensor
) -> torch.Tensor:
    """R + discount * bootstrap * max_k Q_target_net(s', a^1 = k). All (B,), next_values (B, K) -> (B,)."""
    return reward + discount * bootstrap * next_values.max(dim=-1).values


def per_dimension_td_targets(
    target_net_values: torch.Tensor,
    next_values: torch.Tensor,
    reward: torch.Tensor,
    discount: torch.Tensor,
    bootstrap: torch.Tensor,
    mc_return: Optional[torch.Tensor] = None,
    skip_dim_max: bool = False,
) -> torch.Tensor:
    """TD targets for every action dimension, (B, d).

    target_net_values (B, d, K): the target network at s, teacher-forced with the data's bins.
    next_values (B, K): the target network's first-dimension values at the bootstrap state s_{t+m}.
    reward, discount, bootstrap (B,): see the module docstring.
    mc_return (B,) or None: return-to-go G_t; when given, the TD targets are max(y, G_t).
    skip_dim_max: every dimension takes the last dimension's TD target ('all_dims' n-step reading).
    """
    B, d, _ = target_net_values.shape
    last = last_dim_td_target(reward, discount, bootstrap, next_values)  # (B,)
    if skip_dim_max:
        y = last.unsqueeze(1).expand(B, d)  # (B, d)
    else:
        inner = target_net_values[:, 1:, :].max(dim=-1).values  # (B, d-1): max over the next dimension's bins
        y = torch.cat([inner, last.unsqueeze(1)], dim=1)  # (B, d)
    if mc_return is not None:
        y = torch.maximum(y, mc_return.unsqueeze(1))
    return y
