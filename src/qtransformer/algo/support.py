"""Support-constrained action selection (discrete BCQ, Fujimoto et al. 2019), as pure functions.

An imitation head gives, per action dimension, probabilities p_k over the K bins (a softmax of its
logits l_k). Bin k is in the support when it is at least tau times as likely as the likeliest bin:

    support_k  =  p_k >= tau * max_j p_j      <=>      l_k - max_j l_j >= log(tau)

tau = 0 keeps every bin (the paper's greedy rule); tau = 1 keeps only the imitation argmax (ties
aside). The likeliest bin is always in the support, so a restricted max is always finite.

A softer rule weighs the imitation head in instead of cutting at a threshold: with prior weight
lambda >= 0 (value units per nat), decoding takes per dimension

    argmax_k  Q_k + lambda * log p_k

the mode of pi_k ∝ p_k * exp(Q_k / lambda), the KL-regularised improvement step (AWR, Peng et al.
2019; AWAC, Nair et al. 2020) over the bins. lambda = 0 is the plain argmax; as lambda grows it tends to
the imitation argmax. A bin whose value is dQ higher wins against one e times likelier only when
dQ > lambda, so lambda sets the value gap that counts as real rather than noise.
"""

from __future__ import annotations

import math

import torch


def support_mask(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """logits (..., K) -> bool (..., K): the bins whose imitation probability is >= tau * the best one's."""
    if tau <= 0:
        return torch.ones_like(logits, dtype=torch.bool)
    gap = logits.float() - logits.float().amax(dim=-1, keepdim=True)  # (..., K), <= 0
    return gap >= math.log(tau) - 1e-6  # the tolerance keeps the best bin in at tau = 1


def prior_scores(values: torch.Tensor, logits: torch.Tensor, weight: float) -> torch.Tensor:
    """values, logits (..., K) -> values + weight * log softmax(logits) (..., K): the scores decoding
    maximises at prior weight `weight` (the values themselves at 0)."""
    if weight <= 0:
        return values
    return values + weight * torch.log_softmax(logits.float(), dim=-1).to(values.dtype)


def prior_choice(values: torch.Tensor, logits: torch.Tensor, weight: float) -> torch.Tensor:
    """values, logits (..., K) -> values (..., K) with every bin but the one decoding with the prior
    chooses set to -inf, so that a max over K gives that bin's value:

        k*  =  argmax_k  Q_k + weight * log p_k          max_k (result)_k  =  Q_{k*}

    Inside the TD targets this replaces max_k Q_k (the plain argmax's value) by the value of the bin the
    prior-weighted policy takes: the backups then evaluate the policy that acts (as BCQ's targets do)."""
    chosen = prior_scores(values, logits, weight).argmax(dim=-1, keepdim=True)  # (..., 1)
    mask = torch.zeros_like(values, dtype=torch.bool).scatter_(-1, chosen, True)  # (..., K), one bin
    return restrict(values, mask)


def restrict(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values (..., K) with the bins outside `mask` set to -inf, for a max or argmax over the support."""
    return values.masked_fill(~mask, float("-inf"))
