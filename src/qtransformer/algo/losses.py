"""Q-Transformer's loss, in value space (after the sigmoid), never on logits.

With Q = values (B, d, K), a = the data's bins (B, d), y = the TD targets (B, d) of algo/targets.py:

    TD           = mean_{b, j} ( Q[b, j, a_bj] - y_bj )^2
    conservative = alpha * mean_{b, j} [ 1/(N-1) * sum_{k != a_bj} Q[b, j, k]^2 ]
    imitation    = beta * sum_{b, j} m_b CE(l[b, j, :], a_bj) / (d * sum_b m_b)     (optional)
    total        = TD + conservative + imitation

N is the conservative term's reference bin count. N = K is the paper's weighting: each unseen bin is
pushed down with weight alpha/(K-1), so the push per bin falls as K grows (1/255 of alpha at K = 256).
A fixed N (the `default` preset: N = 16) keeps the weight per unseen bin at alpha/(N-1) for every K,
the paper's objective with alpha_paper = alpha * (K-1)/(N-1) (alpha 1 at K = 256: alpha_paper 17).

With bin smoothing (algo.bin_smoothing s > 0) the one-hot of the data bin becomes a Gaussian kernel
over its neighbours, g[b, j, k] = exp(-(k - a_bj)^2 / (2 (s K)^2)) (s is a fraction of the dimension's
range, so s K is in bins; g = 1 at the data bin), and the terms read

    TD           = mean_{b, j} sum_k g[b, j, k] ( Q[b, j, k] - y_bj )^2
    conservative = alpha * mean_{b, j} [ 1/(N-1) * sum_k (1 - g[b, j, k]) Q[b, j, k]^2 ]

so bins next to a data bin share its target, as if the data's action were known to the bin width of a
coarser grid, while the argmax keeps K bins of resolution. s = 0 (g the one-hot) is the paper's.

The imitation term trains a second head on the same trunk (logits l, teacher-forced like the values)
by cross-entropy on the data's bins of the samples with m_b = 1 (a chosen source: demonstrations,
successful episodes or all data); its probabilities restrict decoding to the data's support.

With an HL-Gauss value head (Farebrother et al. 2024; model.value_atoms M > 0) each bin's value is the
mean of a categorical distribution over M atoms in [0, 1] with logits z (B, d, K, M), and both terms
become cross-entropies against the histogram h(y) of a Gaussian N(y, sigma^2) over the atoms' cells
(hl_gauss_histogram), with the same weights:

    TD           = mean_{b, j} CE( h(y_bj), z[b, j, a_bj] )
    conservative = alpha * mean_{b, j} [ 1/(N-1) * sum_{k != a_bj} CE( h(0), z[b, j, k] ) ]

The tabular fixed point is unchanged (the minimiser of p CE(h(y), .) + (1-p) w CE(h(0), .) is the
mixture of the two histograms, whose mean is conservative_fixed_point's, up to h(0)'s own mean).

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


def bin_kernel(bins: torch.Tensor, num_bins: int, smoothing: float) -> torch.Tensor:
    """bins (B, d) -> (B, d, K) g_k = exp(-(k - a)^2 / (2 (smoothing K)^2)), 1 at the data bin a; the
    one-hot of a when smoothing is 0. smoothing is the kernel's standard deviation as a fraction of the
    dimension's range (K bins), so the same value spans the same part of the range at every K."""
    if smoothing <= 0:
        return F.one_hot(bins.long(), num_bins).float()
    k = torch.arange(num_bins, device=bins.device, dtype=torch.float32)  # (K,)
    sigma = smoothing * num_bins  # in bins
    return torch.exp(-(k - bins.float().unsqueeze(-1)).square() / (2.0 * sigma * sigma))  # (B, d, K)


def td_loss(values: torch.Tensor, bins: torch.Tensor, td_targets: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """mean_{b, j} (Q[b, j, a_bj] - y_bj)^2: values (B, d, K), bins (B, d), td_targets (B, d); with a
    kernel g (B, d, K) from bin_kernel, mean_{b, j} sum_k g_bjk (Q[b, j, k] - y_bj)^2."""
    if kernel is None:
        return F.mse_loss(data_bin_values(values, bins), td_targets)
    return ((values - td_targets.unsqueeze(-1)).square() * kernel).sum(-1).mean()


def conservative_loss(values: torch.Tensor, bins: torch.Tensor, reference_bins: int = 0, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over batch and dimensions of sum_{k != a} Q^2 / (N-1) over the bins not taken in the data.

    reference_bins N: 0 (or K) is the paper's mean over the K-1 unseen bins; N > 1 weighs each unseen
    bin by 1/(N-1) whatever K is (see the module docstring). With a kernel g (B, d, K), bin k is pushed
    with weight 1 - g_k instead of 1 (k != a)."""
    K = values.shape[-1]
    N = reference_bins if reference_bins > 0 else K
    seen = F.one_hot(bins.long(), K).to(values.dtype) if kernel is None else kernel.to(values.dtype)  # (B, d, K)
    per_dim = (values.square() * (1.0 - seen)).sum(-1) / (N - 1)  # (B, d)
    return per_dim.mean()


def conservative_fixed_point(p, w, y=1.0):
    """Where the TD and conservative terms leave one bin's value, tabular: the minimiser of

        p (Q - y)^2 + (1 - p) w Q^2   ->   Q* = p y / (p + (1 - p) w)

    for a bin the data takes with probability p at a state (its TD target y, weight 1) and leaves
    untaken otherwise (pushed to 0 with the per-bin weight w = alpha/(N-1)). p = 1 keeps y, p = 0 gives
    0, and Q*/y = 1/2 where p = w/(1 + w): data whose actions spread over many bins (small p at K = 256)
    lose most of their value unless w is small (bench/bin_spread.py measures p). Works on floats and arrays."""
    return p * y / (p + (1.0 - p) * w)


def hl_gauss_histogram(y: torch.Tensor, num_atoms: int, sigma: float = 0.75) -> torch.Tensor:
    """The HL-Gauss target: y (...) in [0, 1] -> (..., M) the mass of N(y, s^2), s = sigma / M (sigma in
    atom widths), on each atom's cell [m/M, (m+1)/M), renormalised over [0, 1]:

        h_m(y) = (Phi((m+1)/M; y, s) - Phi(m/M; y, s)) / (Phi(1; y, s) - Phi(0; y, s))

    A sum of 1 for every y, and its mean over the atoms' centres (m + 1/2)/M is near y (exact away from the
    edges, pulled inward within a few s of 0 and 1)."""
    M = num_atoms
    s = sigma / M
    edges = torch.linspace(0.0, 1.0, M + 1, device=y.device, dtype=torch.float32)  # (M+1,)
    cdf = 0.5 * (1.0 + torch.erf((edges - y.float().unsqueeze(-1)) / (s * 2.0**0.5)))  # (..., M+1)
    return (cdf[..., 1:] - cdf[..., :-1]) / (cdf[..., -1:] - cdf[..., :1])  # (..., M)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-sum_m target_m log softmax(logits)_m over the last axis: (..., M), (..., M) -> (...)."""
    return -(target * torch.log_softmax(logits, dim=-1)).sum(-1)


def hl_gauss_td_loss(value_logits: torch.Tensor, bins: torch.Tensor, td_targets: torch.Tensor, sigma: float = 0.75) -> torch.Tensor:
    """mean_{b, j} CE(h(y_bj), z[b, j, a_bj]): value_logits (B, d, K, M), bins (B, d), td_targets (B, d)."""
    M = value_logits.shape[-1]
    index = bins.long()[..., None, None].expand(*bins.shape, 1, M)  # (B, d, 1, M)
    data_logits = value_logits.gather(-2, index).squeeze(-2)  # (B, d, M)
    return soft_cross_entropy(data_logits, hl_gauss_histogram(td_targets, M, sigma)).mean()


def hl_gauss_conservative_loss(value_logits: torch.Tensor, bins: torch.Tensor, reference_bins: int = 0, sigma: float = 0.75) -> torch.Tensor:
    """Mean over batch and dimensions of sum_{k != a} CE(h(0), z[b, j, k]) / (N-1) over the unseen bins
    (N as in conservative_loss). value_logits (B, d, K, M), bins (B, d)."""
    K, M = value_logits.shape[-2:]
    N = reference_bins if reference_bins > 0 else K
    zero = hl_gauss_histogram(value_logits.new_zeros(()), M, sigma)  # (M,)
    ce = soft_cross_entropy(value_logits, zero)  # (B, d, K)
    unseen = 1.0 - F.one_hot(bins.long(), K).to(ce.dtype)  # (B, d, K)
    return ((ce * unseen).sum(-1) / (N - 1)).mean()


def cql_loss(values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """CQL-style push-down, for the paper's ablation: mean_{b,j} [ logsumexp_k Q[b,j,k] - Q[b,j,a_bj] ],
    on values (after the sigmoid), like every other term here."""
    return (torch.logsumexp(values, dim=-1) - data_bin_values(values, bins)).mean()


def qtransformer_loss(
    values: torch.Tensor, bins: torch.Tensor, td_targets: torch.Tensor, alpha: float, regularizer: str = "zero", reference_bins: int = 0,
    value_logits: torch.Tensor | None = None, hl_gauss_sigma: float = 0.75, bin_smoothing: float = 0.0,
) -> dict:
    """TD + alpha * conservative on values (B, d, K); with value_logits (B, d, K, M) (an HL-Gauss head) the
    TD term and the 'zero' regularizer are the cross-entropies above ('cql' stays on the values).
    bin_smoothing > 0 spreads both terms over neighbouring bins (bin_kernel; the sigmoid head only)."""
    td_targets = td_targets.detach()
    if value_logits is None:
        kernel = bin_kernel(bins, values.shape[-1], bin_smoothing) if bin_smoothing > 0 else None  # (B, d, K)
        td = td_loss(values, bins, td_targets, kernel)
        cons = conservative_loss(values, bins, reference_bins, kernel) if regularizer == "zero" else cql_loss(values, bins)
    else:
        td = hl_gauss_td_loss(value_logits, bins, td_targets, hl_gauss_sigma)
        cons = hl_gauss_conservative_loss(value_logits, bins, reference_bins, hl_gauss_sigma) if regularizer == "zero" else cql_loss(values, bins)
    return {"loss": td + alpha * cons, "td_loss": td, "conservative_loss": cons}


def masked_bc_loss(logits: torch.Tensor, bins: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the data's bins on the samples with mask 1: logits (B, d, K), bins (B, d), mask (B,)
    -> sum_{b,j} m_b CE_bj / (d * sum_b m_b); 0 (with gradient 0) when no sample is masked in."""
    B, d, K = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, K), bins.reshape(-1).long(), reduction="none").view(B, d)  # (B, d)
    m = mask.to(ce.dtype)  # (B,)
    return (ce * m[:, None]).sum() / (d * m.sum().clamp(min=1.0))


def bc_loss(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Behaviour cloning: cross-entropy of each dimension's K logits against the data's bin, mean over
    batch and dimensions. logits (B, d, K), bins (B, d)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), bins.reshape(-1).long())
