"""The Q network (nets/qnet.py): shapes, value range, causality over action dimensions, task tokens."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from qtransformer.nets.qnet import StateEncoder

OBS_DIM, K = 5, 6


@pytest.mark.parametrize("d", [1, 2, 4])
def test_output_shape_and_range(make_net, d):
    net = make_net(OBS_DIM, d, K)
    with torch.no_grad():
        net.head.bias.fill_(20.0)  # push logits far out: values must still be in [0, 1]
        net.head.bias[::2] = -20.0  # even bins far negative, odd bins far positive
        obs = torch.randn(3, OBS_DIM)
        values = net(obs, torch.randint(K, (3, d)))
    assert values.shape == (3, d, K)
    assert values.dtype == torch.float32
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert values[..., 1].min() > 0.99 and values[..., 0].max() < 0.01  # the head's sign is kept


def test_causality_future_bins_do_not_change_earlier_dimensions(make_net):
    d = 4
    net = make_net(OBS_DIM, d, K, seed=1)
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(4, OBS_DIM, generator=gen)
    bins = torch.randint(K, (4, d), generator=gen)
    with torch.no_grad():
        base = net(obs, bins)
        for i in range(d):
            changed = bins.clone()
            changed[:, i:] = (bins[:, i:] + 1 + torch.randint(K - 1, bins[:, i:].shape, generator=gen)) % K
            assert (changed[:, i:] != bins[:, i:]).all()
            out = net(obs, changed)
            # dims <= i see only bins < i, which did not change
            torch.testing.assert_close(out[:, : i + 1], base[:, : i + 1], rtol=0, atol=1e-6)


def test_causality_earlier_bins_do_change_later_dimensions(make_net):
    d = 4
    net = make_net(OBS_DIM, d, K, seed=2)
    obs = torch.randn(4, OBS_DIM)
    bins = torch.randint(K, (4, d))
    with torch.no_grad():
        base = net(obs, bins)
        for j in range(d - 1):
            changed = bins.clone()
            changed[:, j] = (bins[:, j] + 1) % K
            out = net(obs, changed)
            # dims <= j are unchanged; every dim > j sees the change
            torch.testing.assert_close(out[:, : j + 1], base[:, : j + 1], rtol=0, atol=1e-6)
            for i in range(j + 1, d):
                assert (out[:, i] - base[:, i]).abs().max() > 1e-4, f"dim {i} ignores the bin of dim {j}"


def test_last_bin_is_unused(make_net):
    net = make_net(OBS_DIM, 3, K)
    obs = torch.randn(2, OBS_DIM)
    bins = torch.tensor([[1, 2, 0], [3, 4, 5]])
    other = bins.clone()
    other[:, 2] = torch.tensor([5, 0])
    with torch.no_grad():
        torch.testing.assert_close(net(obs, bins), net(obs, other), rtol=0, atol=0)


def test_observation_changes_every_dimension(make_net):
    net = make_net(OBS_DIM, 3, K)
    bins = torch.randint(K, (2, 3))
    with torch.no_grad():
        a = net(torch.zeros(2, OBS_DIM), bins)
        b = net(torch.ones(2, OBS_DIM), bins)
    assert ((a - b).abs().amax(-1) > 1e-4).all()


def test_first_dim_values_and_start_match_teacher_forced_pass(make_net):
    net = make_net(OBS_DIM, 3, K)
    obs = torch.randn(2, OBS_DIM)
    with torch.no_grad():
        full = net(obs, torch.randint(K, (2, 3)))
        torch.testing.assert_close(net.first_dim_values(obs), full[:, 0], rtol=0, atol=1e-6)


def test_task_token_is_used_and_required(make_net):
    net = make_net(OBS_DIM, 2, K, num_tasks=3)
    assert net.num_prefix == 2
    obs = torch.randn(2, OBS_DIM)
    bins = torch.randint(K, (2, 2))
    with torch.no_grad():
        with pytest.raises(ValueError):
            net(obs, bins)
        nn.init.normal_(net.task_embedding.weight, std=1.0)
        a = net(obs, bins, torch.tensor([0, 0]))
        b = net(obs, bins, torch.tensor([2, 2]))
    assert (a - b).abs().max() > 1e-4


def test_state_encoder_normalises_with_the_stored_statistics():
    torch.manual_seed(0)
    enc = StateEncoder(3, 8, 16)
    mean, std = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([2.0, 0.5, 4.0])
    enc.set_normalizer(mean, std)
    obs = torch.randn(4, 3)
    with torch.no_grad():
        out = enc(obs)
        ref = enc.mlp((obs - mean) / std).unsqueeze(1)
    assert out.shape == (4, 1, 8)
    torch.testing.assert_close(out, ref)
    # a zero std is clamped, never a division by zero
    enc.set_normalizer(mean, torch.zeros(3))
    assert torch.isfinite(enc(obs)).all()
    # the statistics are buffers, so they travel with state_dict
    assert {"obs_mean", "obs_std"} <= set(enc.state_dict())

