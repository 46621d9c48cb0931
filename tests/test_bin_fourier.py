"""Fourier features of each bin's place on its axis, added to the bin tokens (model.bin_fourier)."""

from __future__ import annotations

import math

import pytest
import torch

from qtransformer.config import ConfigError, ModelConfig
from qtransformer.policy import decode

OBS_DIM = 4


def test_a_bin_token_is_its_table_row_plus_the_hand_computed_features(make_net):
    net = make_net(OBS_DIM, 3, 4, seed=0, bin_fourier=2)
    bins = torch.tensor([[1, 3]])  # dim 0 takes bin 1, dim 1 takes bin 3 (of K = 4)
    tokens = net._bin_tokens(bins, 0)  # (1, 2, C)
    for j, b in enumerate([1, 3]):
        c = (b + 0.5) * 2 / 4 - 1  # centres of the 4 bins: -0.75, -0.25, 0.25, 0.75
        feats = torch.tensor([math.sin(math.pi * c), math.sin(2 * math.pi * c), math.cos(math.pi * c), math.cos(2 * math.pi * c)])
        want = net.bin_embedding.weight[j * 4 + b] + feats @ net.bin_fourier_proj[j] + net.pos_embedding[net.num_prefix + 1 + j]
        torch.testing.assert_close(tokens[0, j], want)


def test_neighbouring_bins_share_features_and_far_ones_do_not(make_net):
    net = make_net(OBS_DIM, 2, 256, seed=0, bin_fourier=4)
    with torch.no_grad():
        net.bin_embedding.weight.zero_()  # the table alone gives every bin the same (zero) token
        t = net._bin_tokens(torch.tensor([[100], [101], [228]]), 0)[:, 0]  # (3, C)
    near, far = (t[0] - t[1]).norm(), (t[0] - t[2]).norm()
    assert near < 0.2 * far  # one bin turns the fastest feature (8 pi) by 0.2 rad of its period


@pytest.mark.parametrize("d, K", [(2, 5), (4, 7)])
def test_kv_cached_decoding_equals_uncached_with_fourier_features(make_net, d, K):
    net = make_net(OBS_DIM, d, K, seed=d, bin_fourier=3)
    with torch.no_grad():
        net.bin_fourier_proj.normal_(0.0, 1.0)  # large enough to change the argmaxes
    obs = torch.randn(6, OBS_DIM)
    bins_c, values_c = decode(net, obs, None, use_cache=True)
    bins_u, values_u = decode(net, obs, None, use_cache=False)
    assert torch.equal(bins_c, bins_u)
    torch.testing.assert_close(values_c, values_u, rtol=0, atol=1e-6)


def test_with_fourier_features_every_other_weight_starts_as_without_them():
    from qt_testutils import tiny_model_config
    from qtransformer.nets import QTransformerNet

    torch.manual_seed(4)
    plain = QTransformerNet(OBS_DIM, 3, 5, 2, tiny_model_config())
    torch.manual_seed(4)
    fourier = QTransformerNet(OBS_DIM, 3, 5, 2, tiny_model_config(bin_fourier=3))
    assert not hasattr(plain, "bin_fourier_proj")
    extra = set(fourier.state_dict()) - set(plain.state_dict())
    assert extra == {"bin_fourier_proj"}  # the frequencies are recomputed, not saved
    for name, value in plain.state_dict().items():
        assert torch.equal(value, fourier.state_dict()[name]), name


def test_a_bad_count_is_refused():
    with pytest.raises(ConfigError, match="model.bin_fourier"):
        ModelConfig(bin_fourier=-1)


def test_a_saved_model_with_fourier_features_acts_the_same_after_loading(make_net, tmp_path):
    import numpy as np

    from qt_testutils import tiny_model_config
    from qtransformer.actions import ActionDiscretizer
    from qtransformer.checkpoint import model_config, save_model
    from qtransformer.policy import QTPolicy

    net = make_net(OBS_DIM, 3, 6, seed=2, bin_fourier=3)
    with torch.no_grad():
        net.bin_fourier_proj.normal_(0.0, 1.0)
    disc = ActionDiscretizer([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], 6)
    save_model(tmp_path / "model", net, model_config(net, disc, tiny_model_config(bin_fourier=3)))
    after = QTPolicy.from_checkpoint(tmp_path / "model")
    assert after.net.bin_fourier == 3
    obs = np.random.default_rng(0).standard_normal((16, OBS_DIM)).astype(np.float32)
    np.testing.assert_array_equal(after.act(obs), QTPolicy(net, disc).act(obs))
