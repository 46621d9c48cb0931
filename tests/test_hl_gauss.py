"""The HL-Gauss value head (model.value_atoms, algo.hl_gauss_sigma): the histogram, the two
cross-entropy terms, the network's values, decoding, the head's start, training and reloading."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from qt_testutils import tiny_model_config
from qtransformer.algo.losses import hl_gauss_conservative_loss, hl_gauss_histogram, hl_gauss_td_loss, qtransformer_loss
from qtransformer.config import AlgoConfig, ConfigError, ModelConfig, TrainConfig
from qtransformer.data import EpisodeStore
from qtransformer.envs.builtin_dataset import make_builtin_dataset
from qtransformer.nets import QTransformerNet
from qtransformer.policy import QTPolicy, decode, greedy_decode
from qtransformer.train import init_value_head, train

# M = 4 atoms (cells of width 0.25), sigma 0.75 atom widths: s = 0.1875. At y = 0.5 the cell edges sit at
# z = (edge - 0.5) / s = -2.6667, -1.3333, 0, 1.3333, 2.6667, and from the normal table Phi(1.3333) =
# 0.908789, Phi(2.6667) = 0.996170: cell masses 0.087381, 0.408789, 0.408789, 0.087381 over the total
# 0.992340 on [0, 1].
HIST_HALF = [0.087381 / 0.992340, 0.408789 / 0.992340, 0.408789 / 0.992340, 0.087381 / 0.992340]


def test_histogram_by_hand():
    h = hl_gauss_histogram(torch.tensor(0.5), 4, 0.75)
    torch.testing.assert_close(h, torch.tensor(HIST_HALF), rtol=0, atol=2e-6)
    # y = 0: Phi(0) = 0.5 is the mass on [0, 1]; the first cell holds Phi(1.3333) - 0.5 = 0.408789 of it.
    h0 = hl_gauss_histogram(torch.tensor(0.0), 4, 0.75)
    assert h0[0].item() == pytest.approx(0.408789 / 0.5, abs=1e-5)


def test_histogram_sums_to_one_and_keeps_its_mean_away_from_the_edges():
    y = torch.linspace(0.0, 1.0, 41)
    h = hl_gauss_histogram(y, 51, 0.75)  # (41, 51)
    torch.testing.assert_close(h.sum(-1), torch.ones(41), rtol=0, atol=1e-5)
    centres = (torch.arange(51) + 0.5) / 51
    mean = h @ centres
    inside = (y > 0.1) & (y < 0.9)
    torch.testing.assert_close(mean[inside], y[inside], rtol=0, atol=1e-4)
    assert 0.0 < mean[0].item() < 0.02 and 0.98 < mean[-1].item() < 1.0  # pulled inward at the edges


def test_td_loss_by_hand():
    # B = 1, d = 1, K = 2, M = 4; data bin 1 has probabilities 0.1, 0.2, 0.3, 0.4; bin 0 must be ignored.
    logits = torch.zeros(1, 1, 2, 4, dtype=torch.float64)
    logits[0, 0, 1] = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    logits[0, 0, 0] = torch.tensor([9.0, -9.0, 3.0, 1.0])
    bins = torch.tensor([[1]])
    expected = -sum(h * math.log(p) for h, p in zip(HIST_HALF, [0.1, 0.2, 0.3, 0.4], strict=True))
    assert hl_gauss_td_loss(logits, bins, torch.tensor([[0.5]]), 0.75).item() == pytest.approx(expected, abs=1e-5)
    # uniform logits: the cross-entropy is log M whatever the target
    assert hl_gauss_td_loss(torch.zeros(3, 2, 5, 4), torch.zeros(3, 2, dtype=torch.long), torch.rand(3, 2)).item() == pytest.approx(math.log(4), abs=1e-6)


def test_conservative_weight_per_unseen_bin_does_not_change_with_k():
    # Changing one unseen bin's logits from uniform to q changes the term by (CE(h(0), q) - log M) / (N - 1):
    # the same at every K with N = 16, and / (K - 1) with the paper's weighting.
    q = torch.log(torch.tensor([0.7, 0.2, 0.05, 0.05]))
    zero = hl_gauss_histogram(torch.tensor(0.0), 4, 0.75)
    delta = float(-(zero * torch.log_softmax(q, -1)).sum()) - math.log(4)
    for K in (4, 16, 256):
        base = torch.zeros(1, 1, K, 4)
        changed = base.clone()
        changed[0, 0, 1] = q
        bins = torch.zeros(1, 1, dtype=torch.long)
        for N, weight in ((16, 1 / 15), (0, 1 / (K - 1))):
            diff = hl_gauss_conservative_loss(changed, bins, N) - hl_gauss_conservative_loss(base, bins, N)
            assert diff.item() == pytest.approx(delta * weight, abs=1e-6)
        # the data bin (0) is not pushed: changing it leaves the term alone
        data_changed = base.clone()
        data_changed[0, 0, 0] = q
        assert hl_gauss_conservative_loss(data_changed, bins, 16).item() == pytest.approx(hl_gauss_conservative_loss(base, bins, 16).item(), abs=1e-7)


def test_qtransformer_loss_uses_the_cross_entropies_with_value_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 4, requires_grad=True)
    values = torch.softmax(logits, -1) @ ((torch.arange(4) + 0.5) / 4)
    bins, y = torch.randint(5, (2, 3)), torch.rand(2, 3, requires_grad=True)
    out = qtransformer_loss(values, bins, y, 0.5, "zero", 16, value_logits=logits, hl_gauss_sigma=0.75)
    assert out["td_loss"].item() == pytest.approx(hl_gauss_td_loss(logits, bins, y).item())
    assert out["loss"].item() == pytest.approx(out["td_loss"].item() + 0.5 * hl_gauss_conservative_loss(logits, bins, 16).item())
    out["loss"].backward()
    assert y.grad is None  # the targets get no gradient


def test_network_values_are_the_atoms_mean_and_decoding_agrees():
    torch.manual_seed(1)
    net = QTransformerNet(4, 3, 5, 1, tiny_model_config(value_atoms=8)).eval()
    assert net.head.out_features == 5 * 8
    with torch.no_grad():
        net.head.weight.mul_(5.0)
        net.bin_embedding.weight.normal_(0.0, 1.0)
    obs, bins = torch.randn(6, 4), torch.randint(5, (6, 3))
    h = net.features(obs, bins)  # (6, 3, C)
    out = net.head_outputs(h)
    assert out.shape == (6, 3, 5, 8)
    expected = torch.softmax(out, -1) @ ((torch.arange(8) + 0.5) / 8)
    torch.testing.assert_close(net(obs, bins), expected)
    values = net(obs, bins)
    assert values.min() >= 1 / 16 and values.max() <= 15 / 16  # between the first and last atoms
    bins_c, values_c = decode(net, obs, use_cache=True)
    bins_u, values_u = decode(net, obs, use_cache=False)
    assert torch.equal(bins_c, bins_u)
    torch.testing.assert_close(values_c, values_u, rtol=0, atol=1e-6)
    with torch.inference_mode():
        bins_g, _ = greedy_decode(net, obs)
    assert torch.equal(bins_g, bins_c)
    with pytest.raises(ValueError, match="no per-bin logits"):
        net.logits(obs, bins)


def test_head_starts_at_the_requested_value():
    net = QTransformerNet(4, 2, 6, 1, tiny_model_config(value_atoms=51))
    init_value_head(net, 0.3, 0.75)
    start = net.values(torch.zeros(1, net.head.in_features))[0]  # (K,): a zero trunk output reads the bias only
    torch.testing.assert_close(start, torch.full_like(start, 0.3), rtol=0, atol=2e-3)


def test_config_checks():
    with pytest.raises(ConfigError, match="model.value_atoms"):
        ModelConfig(value_atoms=1)
    with pytest.raises(ConfigError, match="algo.hl_gauss_sigma"):
        AlgoConfig(hl_gauss_sigma=0.0)
    with pytest.raises(ConfigError, match="model.value_atoms"):
        TrainConfig(model=ModelConfig(value_atoms=8), algo=AlgoConfig(method="bc"))


def test_trains_saves_and_reloads_acting_identically(tmp_path):
    data = tmp_path / "ds"
    EpisodeStore.create(data, make_builtin_dataset(demos=3, autonomous=4))
    cfg = TrainConfig(
        dataset=data, out=tmp_path / "run", steps=6, batch_size=16, device="cpu", seed=0, log_every=3, eval_every=0,
        eval_episodes=0, save_every=6, progress=False, model=tiny_model_config(value_atoms=16), algo=AlgoConfig(num_bins=8, warmup_steps=0),
    )
    final = train(cfg)
    policy = QTPolicy.from_checkpoint(final)
    assert policy.net.value_atoms == 16
    obs = np.random.default_rng(0).standard_normal((5, policy.net.obs_dim)).astype(np.float32)
    again = QTPolicy.from_checkpoint(final)
    np.testing.assert_array_equal(policy.act(obs), again.act(obs))
    # the values moved away from the start (the cross-entropies train the head)
    resumed = train(dataclasses.replace(cfg, steps=12, resume=True, save_every=12))
    before, after = policy.net.head.weight, QTPolicy.from_checkpoint(resumed).net.head.weight
    assert not torch.equal(before, after)


def test_a_run_from_before_value_atoms_resumes(tmp_path):
    import json

    data = tmp_path / "ds"
    EpisodeStore.create(data, make_builtin_dataset(demos=2, autonomous=2))
    cfg = TrainConfig(dataset=data, out=tmp_path / "run", steps=2, batch_size=8, device="cpu", eval_every=0, eval_episodes=0,
                      save_every=2, progress=False, model=tiny_model_config(), algo=AlgoConfig(num_bins=4, warmup_steps=0))
    state_path = train(cfg) / "training_state" / "state.json"
    state = json.loads(state_path.read_text())
    del state["train_config"]["model"]["value_atoms"], state["train_config"]["algo"]["hl_gauss_sigma"]  # as an older version wrote it
    del state["train_config"]["algo"]["bin_smoothing"]  # added later still: an old run resumes at 0
    state_path.write_text(json.dumps(state))
    assert train(dataclasses.replace(cfg, steps=4, resume=True)).name == "step_00000004"
    # a changed head is still refused
    with pytest.raises(ConfigError, match="model.value_atoms"):
        train(dataclasses.replace(cfg, steps=6, resume=True, model=tiny_model_config(value_atoms=8)))
