"""Shared fixtures for the unit tests: tiny models only, so the whole suite runs in seconds on a CPU."""

from __future__ import annotations

import pytest
import torch

# Tiny tensors: one thread is fastest, and it keeps the suite quick on a busy 2-core machine.
torch.set_num_threads(1)

from qtransformer.config import ModelConfig
from qtransformer.nets import QTransformerNet


def tiny_model_config(**overrides) -> ModelConfig:
    base = dict(d_model=16, n_layers=1, n_heads=2, encoder_hidden=16)
    base.update(overrides)
    return ModelConfig(**base)


@pytest.fixture
def make_net():
    """Factory: make_net(obs_dim, action_dim, num_bins, num_tasks=1, seed=0, **model_overrides)."""

    def _make(obs_dim: int, action_dim: int, num_bins: int, num_tasks: int = 1, seed: int = 0, **overrides):
        torch.manual_seed(seed)
        net = QTransformerNet(obs_dim, action_dim, num_bins, num_tasks, tiny_model_config(**overrides))
        # The default init puts every value near 0.5 and every embedding near 0; spread the head's output
        # so that argmaxes and differences are well separated from float noise.
        with torch.no_grad():
            net.head.weight.mul_(5.0)
            net.bin_embedding.weight.normal_(0.0, 1.0)
        return net.eval()

    return _make
