"""Shared fixtures for the unit tests: tiny models only, so the whole suite runs in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qt_testutils import tiny_model_config
from qtransformer.nets import QTransformerNet

_E2E = Path(__file__).parent / "e2e"


@pytest.fixture(autouse=True)
def _one_torch_thread(request):
    """Tiny tensors: one thread is fastest, and it keeps the unit tests quick on a busy 2-core machine.

    The end-to-end tests (tests/e2e/) keep torch's own setting."""
    if _E2E in Path(str(request.node.path)).parents:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def make_net():
    """Factory: make_net(obs_dim, action_dim, num_bins, num_tasks=1, seed=0, **model_overrides)."""

    def _make(obs_dim: int, action_dim: int, num_bins: int, num_tasks: int = 1, seed: int = 0, **overrides):
        torch.manual_seed(seed)
        net = QTransformerNet(obs_dim, action_dim, num_bins, num_tasks, tiny_model_config(**overrides))
        # The default init puts every value near 0.5 and every bin embedding near 0; spread them so that
        # argmaxes and differences stand well clear of float noise.
        with torch.no_grad():
            net.head.weight.mul_(5.0)
            net.bin_embedding.weight.normal_(0.0, 1.0)
        return net.eval()

    return _make
