"""Q-Transformer's loss (algo/losses.py): TD and conservative terms, by hand and by their properties."""

from __future__ import annotations

import math

import pytest
import torch

from qtransformer.algo.losses import conservative_loss, data_bin_values, masked_bc_loss, qtransformer_loss, td_loss

# B = 1, d = 2, K = 3.
VALUES = torch.tensor([[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]], dtype=torch.float64)
BINS = torch.tensor([[0, 2]])  # data bins: dim 0 -> bin 0 (0.1), dim 1 -> bin 2 (0.6)
TARGETS = torch.tensor([[0.5, 0.2]], dtype=torch.float64)


def test_data_bin_values_gathers_the_data_bins():
    assert data_bin_values(VALUES, BINS).tolist() == [[0.1, 0.6]]


def test_conservative_loss_by_hand():
    # dim 0, unseen bins 1, 2: (0.2^2 + 0.3^2) / (K-1) = (0.04 + 0.09) / 2 = 0.065
    # dim 1, unseen bins 0, 1: (0.4^2 + 0.5^2) / (K-1) = (0.16 + 0.25) / 2 = 0.205
    # mean over (b, j): (0.065 + 0.205) / 2 = 0.135
    assert conservative_loss(VALUES, BINS).item() == pytest.approx(0.135, abs=1e-12)


def test_td_loss_by_hand():
    # data-bin values [0.1, 0.6], targets [0.5, 0.2]: ((0.1-0.5)^2 + (0.6-0.2)^2) / 2 = (0.16 + 0.16) / 2 = 0.16
    assert td_loss(VALUES, BINS, TARGETS).item() == pytest.approx(0.16, abs=1e-12)


def test_conservative_loss_ignores_the_data_bin_value():
    changed = VALUES.clone()
    changed[0, 0, 0] = 0.95  # the data bin of dim 0
    changed[0, 1, 2] = 0.0  # the data bin of dim 1
    assert conservative_loss(changed, BINS).item() == pytest.approx(0.135, abs=1e-12)
    # ...while an unseen bin does count: dim 0 bin 1 from 0.2 to 0.0 -> dim 0 term 0.09/2 = 0.045,
    # mean (0.045 + 0.205) / 2 = 0.125
    changed[0, 0, 1] = 0.0
    assert conservative_loss(changed, BINS).item() == pytest.approx(0.125, abs=1e-12)


def test_conservative_gradient_is_zero_on_data_bins_and_2v_over_norm_elsewhere():
    v = VALUES.clone().requires_grad_(True)
    conservative_loss(v, BINS).backward()
    g = v.grad
    assert g[0, 0, 0].item() == 0.0 and g[0, 1, 2].item() == 0.0
    # d/dv of mean_{b,j} sum_{k unseen} v^2 / (K-1) = 2 v / ((K-1) * B * d) = 2 v / (2 * 1 * 2) = v / 2
    assert g[0, 0, 1].item() == pytest.approx(0.1, abs=1e-12)
    assert g[0, 0, 2].item() == pytest.approx(0.15, abs=1e-12)
    assert g[0, 1, 0].item() == pytest.approx(0.2, abs=1e-12)
    assert g[0, 1, 1].item() == pytest.approx(0.25, abs=1e-12)


def test_losses_invariant_to_duplicating_the_batch():
    torch.manual_seed(0)
    values = torch.rand(5, 3, 7, dtype=torch.float64)
    bins = torch.randint(7, (5, 3))
    targets = torch.rand(5, 3, dtype=torch.float64)
    cons = conservative_loss(values, bins)
    td = td_loss(values, bins, targets)
    values2, bins2, targets2 = torch.cat([values] * 2), torch.cat([bins] * 2), torch.cat([targets] * 2)
    assert conservative_loss(values2, bins2).item() == pytest.approx(cons.item(), rel=1e-12)
    assert td_loss(values2, bins2, targets2).item() == pytest.approx(td.item(), rel=1e-12)


def test_conservative_loss_matches_a_loop_reference():
    torch.manual_seed(1)
    B, d, K = 4, 3, 5
    values = torch.rand(B, d, K, dtype=torch.float64)
    bins = torch.randint(K, (B, d))
    total = 0.0
    for b in range(B):
        for j in range(d):
            total += sum(values[b, j, k].item() ** 2 for k in range(K) if k != bins[b, j].item()) / (K - 1)
    assert conservative_loss(values, bins).item() == pytest.approx(total / (B * d), rel=1e-12)


def test_qtransformer_loss_total_is_td_plus_alpha_cons_and_targets_get_no_gradient():
    v = VALUES.clone().requires_grad_(True)
    targets = TARGETS.clone().requires_grad_(True)
    out = qtransformer_loss(v, BINS, targets, alpha=0.5)
    # td = 0.16, cons = 0.135, total = 0.16 + 0.5 * 0.135 = 0.2275
    assert out["td_loss"].item() == pytest.approx(0.16, abs=1e-12)
    assert out["conservative_loss"].item() == pytest.approx(0.135, abs=1e-12)
    assert out["loss"].item() == pytest.approx(0.2275, abs=1e-12)
    out["loss"].backward()
    assert targets.grad is None  # targets are constants of the regression
    # data bins get only the TD gradient: 2 (q - y) / (B*d) -> dim 0: 2*(0.1-0.5)/2 = -0.4, dim 1: 2*(0.6-0.2)/2 = 0.4
    assert v.grad[0, 0, 0].item() == pytest.approx(-0.4, abs=1e-12)
    assert v.grad[0, 1, 2].item() == pytest.approx(0.4, abs=1e-12)
    # unseen bins only the conservative one, scaled by alpha: 0.5 * v / 2 -> dim 0 bin 1: 0.05
    assert v.grad[0, 0, 1].item() == pytest.approx(0.05, abs=1e-12)


def test_conservative_weight_per_unseen_bin_does_not_change_with_k():
    # One unseen bin at 0.6, every other unseen bin at 0, data bin 0 (at any value): with reference N = 16
    # the term is 0.6^2 / 15 = 0.024 at every K; the paper's weighting gives 0.36 / (K - 1).
    for K in (4, 16, 256):
        values = torch.zeros(1, 1, K, dtype=torch.float64)
        values[0, 0, 0], values[0, 0, 1] = 0.9, 0.6
        bins = torch.zeros(1, 1, dtype=torch.long)
        assert conservative_loss(values, bins, reference_bins=16).item() == pytest.approx(0.024, abs=1e-12)
        assert conservative_loss(values, bins).item() == pytest.approx(0.36 / (K - 1), abs=1e-12)
        assert conservative_loss(values, bins, reference_bins=K).item() == pytest.approx(0.36 / (K - 1), abs=1e-12)


def test_masked_bc_loss_by_hand():
    # B = 2, d = 1, K = 2: logits [0, 0] for sample 0 (CE = log 2), [log 3, 0] for sample 1 with data bin 0
    # (p = 3/4, CE = log 4/3); masking sample 1 out leaves log 2, both in gives their mean.
    logits = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]], dtype=torch.float64)
    bins = torch.tensor([[1], [0]])
    assert masked_bc_loss(logits, bins, torch.tensor([1.0, 0.0])).item() == pytest.approx(math.log(2.0), abs=1e-12)
    both = masked_bc_loss(logits, bins, torch.tensor([1.0, 1.0])).item()
    assert both == pytest.approx((math.log(2.0) + math.log(4.0 / 3.0)) / 2, abs=1e-12)
    assert masked_bc_loss(logits, bins, torch.zeros(2)).item() == 0.0  # no sample to imitate: no loss


def test_conservative_fixed_point_by_hand():
    from qtransformer.algo.losses import conservative_fixed_point

    assert conservative_fixed_point(1.0, 0.5, 0.8) == 0.8  # always the data bin: the TD target
    assert conservative_fixed_point(0.0, 0.5, 0.8) == 0.0  # never taken: pushed to 0
    assert abs(conservative_fixed_point(0.25, 1 / 15, 1.0) - 0.25 / (0.25 + 0.75 / 15)) < 1e-12  # 0.8333
    w = 1 / 15
    assert abs(conservative_fixed_point(w / (1 + w), w) - 0.5) < 1e-12
    # and it is the minimiser: the loss is larger a little to either side
    p, y = 0.1, 0.6
    q = conservative_fixed_point(p, w, y)
    loss = lambda v: p * (v - y) ** 2 + (1 - p) * w * v**2  # noqa: E731
    assert loss(q) < loss(q + 1e-3) and loss(q) < loss(q - 1e-3)


def test_bin_kernel_by_hand():
    from qtransformer.algo.losses import bin_kernel

    # K = 5, data bin 2, smoothing 1/5: sigma = 1 bin, g_k = exp(-(k-2)^2 / 2)
    g = bin_kernel(torch.tensor([[2]]), 5, 1 / 5)
    e = math.exp
    assert g.shape == (1, 1, 5)
    assert g[0, 0].tolist() == pytest.approx([e(-2.0), e(-0.5), 1.0, e(-0.5), e(-2.0)], abs=1e-7)
    # smoothing 0 is the data bin's one-hot (the paper's terms)
    assert bin_kernel(torch.tensor([[2]]), 5, 0.0)[0, 0].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    # the same smoothing spans the same share of the range at every K: sigma 4 bins at K = 256, 0.25 at K = 16
    g256 = bin_kernel(torch.tensor([[100]]), 256, 1 / 64)[0, 0]
    assert g256[104].item() == pytest.approx(e(-0.5), abs=1e-6)
    g16 = bin_kernel(torch.tensor([[8]]), 16, 1 / 64)[0, 0]
    assert g16[9].item() == pytest.approx(e(-8.0), abs=1e-9)


def test_smoothed_td_and_conservative_losses_by_hand():
    from qtransformer.algo.losses import bin_kernel

    # K = 3, smoothing 1/3: sigma = 1 bin. dim 0 (data bin 0): g = [1, e^-1/2, e^-2]; dim 1 (bin 2): g = [e^-2, e^-1/2, 1]
    a, b = math.exp(-0.5), math.exp(-2.0)
    g = bin_kernel(BINS, 3, 1 / 3)
    # TD, dim 0 (target 0.5): (0.1-0.5)^2 + a (0.2-0.5)^2 + b (0.3-0.5)^2 = 0.16 + 0.09 a + 0.04 b;
    # dim 1 (target 0.2): b (0.4-0.2)^2 + a (0.5-0.2)^2 + (0.6-0.2)^2, the same; their mean is that value
    assert td_loss(VALUES, BINS, TARGETS, g).item() == pytest.approx(0.16 + 0.09 * a + 0.04 * b, abs=1e-7)
    # conservative (K - 1 = 2): dim 0 ((1-a) 0.2^2 + (1-b) 0.3^2) / 2, dim 1 ((1-b) 0.4^2 + (1-a) 0.5^2) / 2
    cons0 = ((1 - a) * 0.04 + (1 - b) * 0.09) / 2
    cons1 = ((1 - b) * 0.16 + (1 - a) * 0.25) / 2
    assert conservative_loss(VALUES, BINS, kernel=g).item() == pytest.approx((cons0 + cons1) / 2, abs=1e-7)
    # through qtransformer_loss: TD + alpha * conservative with the kernel made from bin_smoothing
    out = qtransformer_loss(VALUES, BINS, TARGETS, alpha=2.0, bin_smoothing=1 / 3)
    assert out["loss"].item() == pytest.approx(0.16 + 0.09 * a + 0.04 * b + 2.0 * (cons0 + cons1) / 2, abs=1e-7)


def test_no_smoothing_is_the_papers_loss_exactly():
    torch.manual_seed(0)
    values, bins, targets = torch.rand(6, 3, 9, dtype=torch.float64), torch.randint(9, (6, 3)), torch.rand(6, 3, dtype=torch.float64)
    plain = qtransformer_loss(values, bins, targets, alpha=1.5)
    zero = qtransformer_loss(values, bins, targets, alpha=1.5, bin_smoothing=0.0)
    assert plain["loss"].item() == zero["loss"].item()
    # and smoothing pulls a neighbour of the data bin towards the target rather than towards 0
    v = torch.zeros(1, 1, 9, dtype=torch.float64, requires_grad=True)
    qtransformer_loss(v, torch.tensor([[4]]), torch.tensor([[0.8]], dtype=torch.float64), alpha=1.0, bin_smoothing=1 / 9)["loss"].backward()
    assert v.grad[0, 0, 5].item() < 0  # a descent step raises bin 5 (one bin from the data bin)
    # bin 0, four bins away: TD weight e^-8, so its pull is 2 * e^-8 * (0 - 0.8) / (B d) = -1.6 e^-8
    assert v.grad[0, 0, 0].item() == pytest.approx(-1.6 * math.exp(-8.0), rel=1e-6)  # the kernel is float32
