"""The causal Transformer (nets/transformer.py): causal mask and the KV cache."""

from __future__ import annotations

import pytest
import torch

from qtransformer.nets.transformer import CausalTransformer


@pytest.fixture
def model():
    torch.manual_seed(0)
    return CausalTransformer(d_model=16, n_layers=2, n_heads=2).eval()


def test_causal_prefix_outputs_do_not_see_later_tokens(model):
    x = torch.randn(2, 6, 16)
    y = x.clone()
    y[:, 3:] = torch.randn(2, 3, 16)
    with torch.no_grad():
        hx, _ = model(x)
        hy, _ = model(y)
    torch.testing.assert_close(hx[:, :3], hy[:, :3], rtol=0, atol=1e-6)
    assert (hx[:, 3:] - hy[:, 3:]).abs().max() > 1e-3


@pytest.mark.parametrize("split", [[6], [1, 1, 1, 1, 1, 1], [2, 1, 3], [4, 2], [1, 5]])
def test_kv_cache_equals_full_pass(model, split):
    x = torch.randn(3, 6, 16)
    with torch.no_grad():
        full, _ = model(x)
        outs, cache, t = [], None, 0
        for n in split:
            h, cache = model(x[:, t : t + n], cache)
            outs.append(h)
            t += n
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=0, atol=1e-5)
    assert len(cache) == 2 and cache[0][0].shape == (3, 2, 6, 8)


def test_heads_must_divide_width():
    with pytest.raises(ValueError):
        CausalTransformer(d_model=10, n_layers=1, n_heads=3)


def test_attention_runs_in_fp32_under_cpu_bf16_autocast(model):
    """The CPU attention kernels are slower in bf16 at these sequence lengths: under autocast the
    projections run in bf16 but attention (hence the cached keys and values) stays in fp32, and the
    cached pass still equals the full one."""
    x = torch.randn(3, 6, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full, cache = model(x)
        first, part = model(x[:, :4])
        rest, _ = model(x[:, 4:], part)
    assert all(k.dtype == torch.float32 and v.dtype == torch.float32 for k, v in cache)
    torch.testing.assert_close(torch.cat([first, rest], 1), full, rtol=0, atol=1e-5)
    with torch.no_grad():
        fp32, _ = model(x)
    assert (full.float() - fp32).abs().max() < 0.1  # bf16 projections: close, not equal


def test_model_cast_to_bf16_runs_on_cpu(model):
    """A model converted to bf16 (not autocast) also takes the fp32 attention path and still runs."""
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        h, cache = model.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert h.dtype == torch.bfloat16 and cache[0][0].dtype == torch.float32
