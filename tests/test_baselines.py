"""Pieces for the paper's comparison: the CQL-style regulariser, behaviour cloning, successful-only sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qt_testutils import tiny_model_config
from qtransformer.actions import ActionDiscretizer
from qtransformer.algo import QTransformerLearner
from qtransformer.algo.losses import bc_loss, cql_loss, qtransformer_loss
from qtransformer.config import AlgoConfig
from qtransformer.data import Batch, EpisodeDataset, TransitionSampler, build_transitions
from qtransformer.nets import QTransformerNet
from qtransformer.policy import decode


def test_cql_regulariser_by_hand():
    values = torch.tensor([[[0.2, 0.5, 0.1], [0.9, 0.0, 0.3]]])  # (B=1, d=2, K=3)
    bins = torch.tensor([[1, 0]])
    # dim 0: log(e^.2 + e^.5 + e^.1) - 0.5 ; dim 1: log(e^.9 + e^0 + e^.3) - 0.9 ; mean of the two
    expected = ((math.log(math.exp(0.2) + math.exp(0.5) + math.exp(0.1)) - 0.5)
                + (math.log(math.exp(0.9) + 1.0 + math.exp(0.3)) - 0.9)) / 2
    assert cql_loss(values, bins).item() == pytest.approx(expected, rel=1e-6)
    assert cql_loss(values.repeat(3, 1, 1), bins.repeat(3, 1)).item() == pytest.approx(expected, rel=1e-6)
    targets = torch.tensor([[0.4, 0.7]])
    out = qtransformer_loss(values, bins, targets, alpha=0.5, regularizer="cql")
    td = ((0.5 - 0.4) ** 2 + (0.9 - 0.7) ** 2) / 2
    assert out["loss"].item() == pytest.approx(td + 0.5 * expected, rel=1e-6)


def test_bc_loss_by_hand():
    logits = torch.zeros(2, 3, 4)  # uniform over K = 4: cross-entropy log 4 everywhere
    assert bc_loss(logits, torch.zeros(2, 3, dtype=torch.long)).item() == pytest.approx(math.log(4))
    logits[:, :, 2] = 10.0
    assert bc_loss(logits, torch.full((2, 3), 2)).item() < 1e-3


def one_state_batch(action, B=32):
    return Batch(
        obs=torch.zeros(B, 3), bins=torch.tensor(action).repeat(B, 1),
        reward=torch.zeros(B), discount=torch.full((B,), 0.9), bootstrap=torch.zeros(B),
        next_obs=torch.zeros(B, 3), mc_return=torch.zeros(B),
    )


def test_bc_learns_to_repeat_the_data_action():
    torch.manual_seed(0)
    net = QTransformerNet(3, 2, 4, 1, tiny_model_config())
    learner = QTransformerLearner(net, AlgoConfig(num_bins=4, method="bc", warmup_steps=0, lr=3e-3), "cpu")
    before = decode(net.eval(), torch.zeros(1, 3))[0].tolist()
    for _ in range(60):
        metrics = learner.update(one_state_batch([2, 1]))
    assert decode(learner.online.eval(), torch.zeros(1, 3))[0].tolist() == [[2, 1]] != before
    assert metrics["bin_accuracy"] == 1.0 and metrics["bc_loss"] < 0.1


def test_only_successful_steps_are_sampled():
    def ep(success, length=3):
        obs = np.full((length + 1, 2), float(success), np.float32)
        return {"observations": obs[:-1], "next_observations": obs[1:], "actions": np.zeros((length, 2), np.float32),
                "rewards": np.eye(length, dtype=np.float32)[-1] * success, "terminals": np.eye(length, dtype=bool)[-1] * success,
                "timeouts": np.eye(length, dtype=bool)[-1] * (not success), "source": "autonomous"}

    ds = EpisodeDataset.from_episodes([ep(0), ep(1), ep(0), ep(1)], [-1, -1], [1, 1])
    tr = build_transitions(ds, ActionDiscretizer([-1, -1], [1, 1], 4), 0.9, 1)
    filtered = TransitionSampler(tr, 64, "cpu", seed=0, only_successful=True)
    assert filtered.make_batch(0).obs[:, 0].eq(1.0).all()
    assert not TransitionSampler(tr, 64, "cpu", seed=0).make_batch(0).obs[:, 0].eq(1.0).all()
    failures = EpisodeDataset.from_episodes([ep(0), ep(0)], [-1, -1], [1, 1])
    with pytest.raises(ValueError, match="no successful episode"):
        TransitionSampler(build_transitions(failures, ActionDiscretizer([-1, -1], [1, 1], 4), 0.9, 1), 8, "cpu", 0, only_successful=True)
