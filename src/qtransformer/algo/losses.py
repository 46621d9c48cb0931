"""Q-Transformer's loss, in value space (after the sigmoid), never on logits.

With Q = values (B, d, K), a = the data's bins (B, d), y = targets (B, d):

    TD           = mean_{b, j} ( Q[b, j, a_bj] - y_bj )^2
    conservative = alpha * mean_{b, j} [ 1/(K-1) * sum_{k != a_bj} Q[b, j, k]^2 ]
    total        = TD + conservative

The paper writes both terms with a factor 1/2; dropping it from both scales the loss by 2 and leaves
the balance between the terms, alpha, unchanged. Means (not sums) over the batch, so that duplicating
a batch leaves every term unchanged and alpha does not depend on the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def data_bin_values(values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """values (B, d, K), bins (B, d) -> (B, d) the value of each dimension's data bin."""
    return values.gather(-1, bins.long().unsqueeze(-1)).squeeze(-1)


def td_loss(values: torch.Tensor, bins: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(data_bin_values(values, bins), targets)


def conservative_loss(values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Mean over batch and dimensions of the mean squared value of the K-1 bins not taken in the data."""
    K = values.shape[-1]
    unseen = 1.0 - F.one_hot(bins.long(), K).to(values.dtype)  # (B, d, K): 1 on bins not in the data
    per_dim = (values.square() * unseen).sum(-1) / (K - 1)  # (B, d)
    return per_dim.mean()


def cql_loss(values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """CQL-style push-down, for the paper's ablation: mean_{b,j} [ logsumexp_k Q[b,j,k] - Q[b,j,a_bj] ],
    on values (after the sigmoid), like every other term here."""
    return (torch.logsumexp(values, dim=-1) - data_bin_values(values, bins)).mean()


def qtransformer_loss(values: torch.Tensor, bins: torch.Tensor, targets: torch.Tensor, alpha: float, regularizer: str = "zero") -> dict:
    td = td_loss(values, bins, targets.detach())
    cons = conservative_loss(values, bins) if regularizer == "zero" else cql_loss(values, bins)
    return {"loss": td + alpha * cons, "td_loss": td, "conservative_loss": cons}


def bc_loss(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Behaviour cloning: cross-entropy of each dimension's K logits against the data's bin, mean over
    batch and dimensions. logits (B, d, K), bins (B, d)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), bins.reshape(-1).long())
