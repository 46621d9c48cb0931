"""Support-constrained decoding (algo/support.py, policy.py) and the imitation head in the learner."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qt_testutils import tiny_model_config
from qtransformer.actions import ActionDiscretizer
from qtransformer.algo import QTransformerLearner, per_dimension_td_targets
from qtransformer.algo.losses import masked_bc_loss, qtransformer_loss
from qtransformer.algo.support import prior_choice, prior_scores, restrict, support_mask
from qtransformer.config import AlgoConfig
from qtransformer.data import Batch
from qtransformer.nets import QTransformerNet
from qtransformer.policy import QTPolicy, decode, greedy_decode
from qtransformer.processor import ModelInputs

OBS_DIM = 4


def imitation_net(d: int, K: int, seed: int = 0) -> QTransformerNet:
    torch.manual_seed(seed)
    net = QTransformerNet(OBS_DIM, d, K, 1, tiny_model_config(), imitation_head=True)
    with torch.no_grad():  # spread values and logits so that argmaxes stand clear of float noise
        net.head.weight.mul_(5.0)
        net.imitation_head.weight.mul_(5.0)
        net.bin_embedding.weight.normal_(0.0, 1.0)
    return net.eval()


def test_support_mask_by_hand():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert support_mask(logits, 0.0).tolist() == [True, True, True, True]  # the paper's greedy rule
    assert support_mask(logits, 0.2).tolist() == [True, True, True, False]  # p >= 0.1
    assert support_mask(logits, 0.5).tolist() == [True, True, False, False]  # p >= 0.25
    assert support_mask(logits, 1.0).tolist() == [True, False, False, False]  # the imitation argmax
    # logits shifted by a constant give the same probabilities, so the same support
    assert torch.equal(support_mask(logits + 3.0, 0.5), support_mask(logits, 0.5))


def test_restrict_sets_bins_outside_the_support_to_minus_infinity():
    values = torch.tensor([[0.9, 0.2, 0.4]])
    out = restrict(values, torch.tensor([[False, True, True]]))
    assert out[0, 0].item() == -math.inf and out[0, 1:].tolist() == pytest.approx([0.2, 0.4])
    assert out.argmax(-1).item() == 2  # the best bin inside the support, not the best overall


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.0])
def test_constrained_decoding_is_the_sequential_argmax_over_the_support(tau):
    d, K = 3, 5
    net = imitation_net(d, K, seed=4)
    obs = torch.randn(6, OBS_DIM)
    bins, chosen = decode(net, obs, support_tau=tau)
    with torch.no_grad():
        h = net.features(obs, bins)  # (B, d, C): teacher-forced with the decoded bins, causal
        values, logits = net.values(h), net.imitation_logits(h)  # (B, d, K) each
    p = torch.softmax(logits, -1)
    for i in range(d):
        allowed = p[:, i] >= tau * p[:, i].max(-1, keepdim=True).values - 1e-6  # (B, K)
        expected = values[:, i].masked_fill(~allowed, -1.0).argmax(-1)
        assert torch.equal(bins[:, i], expected)
        torch.testing.assert_close(chosen[:, i], values[:, i].gather(1, expected[:, None])[:, 0], rtol=0, atol=1e-6)
        if tau == 1.0:  # tau = 1 is the imitation argmax
            assert torch.equal(bins[:, i], logits[:, i].argmax(-1))
    if tau == 0.0:  # tau = 0 is plain greedy decoding
        plain, _ = decode(net, obs)
        assert torch.equal(bins, plain)


def test_support_changes_the_choice_on_this_net():
    """The parametrised test above would pass trivially if the support never excluded the greedy bin."""
    net = imitation_net(3, 5, seed=4)
    obs = torch.randn(32, OBS_DIM)
    assert not torch.equal(decode(net, obs, support_tau=1.0)[0], decode(net, obs)[0])


def test_straight_line_and_cached_and_uncached_constrained_decoding_agree():
    net = imitation_net(4, 5, seed=2)
    obs = torch.randn(6, OBS_DIM)
    cached, _ = decode(net, obs, support_tau=0.3)
    uncached, _ = decode(net, obs, use_cache=False, support_tau=0.3)
    with torch.inference_mode():
        straight, _ = greedy_decode(net, obs, support_tau=0.3)
    assert torch.equal(cached, uncached) and torch.equal(cached, straight)


def test_policy_takes_the_training_runs_tau_and_an_override():
    net = imitation_net(3, 5, seed=4)
    disc = ActionDiscretizer([-1.0] * 3, [1.0] * 3, 5)
    obs = np.random.default_rng(0).standard_normal((8, OBS_DIM)).astype(np.float32)
    trained = QTPolicy(net, disc, {"algo": {"support_tau": 1.0}})
    assert trained.support_tau == 1.0
    expected = disc.decode(decode(net, torch.from_numpy(obs), support_tau=1.0)[0])
    np.testing.assert_array_equal(trained.act(obs), expected)
    override = QTPolicy(net, disc, {"algo": {"support_tau": 1.0}}, support_tau=0.0)
    np.testing.assert_array_equal(override.act(obs), disc.decode(decode(net, torch.from_numpy(obs))[0]))


def test_prior_scores_by_hand():
    values = torch.tensor([0.30, 0.32, 0.10])
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    assert torch.equal(prior_scores(values, logits, 0.0), values)  # the plain values
    # 0.30 + 0.01 ln 0.6 = 0.29489, 0.32 + 0.01 ln 0.3 = 0.30796, 0.10 + 0.01 ln 0.1 = 0.07697
    torch.testing.assert_close(prior_scores(values, logits, 0.01), torch.tensor([0.29489, 0.30796, 0.07697]), rtol=0, atol=1e-5)
    assert prior_scores(values, logits, 0.01).argmax().item() == 1  # 0.02 higher value beats half the probability
    # 0.30 + 0.05 ln 0.6 = 0.27446 > 0.32 + 0.05 ln 0.3 = 0.25980: at 0.05 per nat the likelier bin wins
    torch.testing.assert_close(prior_scores(values, logits, 0.05)[:2], torch.tensor([0.27446, 0.25980]), rtol=0, atol=1e-5)
    assert prior_scores(values, logits, 0.05).argmax().item() == 0
    # logits shifted by a constant are the same distribution
    torch.testing.assert_close(prior_scores(values, logits + 2.0, 0.05), prior_scores(values, logits, 0.05))



def test_prior_choice_keeps_the_value_of_the_bin_the_prior_weighted_rule_takes():
    values = torch.tensor([[0.30, 0.32, 0.10], [0.50, 0.20, 0.60]])  # (2, K = 3)
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]))
    # row 0 as in the case above: at 0.01 bin 1 (0.32) wins, at 0.05 bin 0 (0.30); row 1: 0.60 + w ln 0.8 wins either way
    assert prior_choice(values, logits, 0.01).amax(dim=-1).tolist() == pytest.approx([0.32, 0.60])
    assert prior_choice(values, logits, 0.05).amax(dim=-1).tolist() == pytest.approx([0.30, 0.60])
    assert torch.equal(prior_choice(values, logits, 0.0).amax(dim=-1), values.amax(dim=-1))  # weight 0: the plain max
    chosen = prior_choice(values, logits, 0.05)
    assert torch.isinf(chosen).sum().item() == 4 and (chosen[torch.isfinite(chosen)] == torch.tensor([0.30, 0.60])).all()  # one bin each


def test_td_targets_with_the_prior_in_them_take_the_value_of_the_prior_weighted_choice():
    """--algo.prior-in-targets: each maximum of the targets (the next dimension's at s, the first at s') is
    Q_target at argmax Q_target + lambda log p_prior; at a huge lambda, Q_target at the prior's own argmax."""
    d, K = 3, 5
    batch = make_batch(d=d, K=K)
    prior = spread_net(d, K, seed=7)
    for weight in (0.05, 1e4):
        learner = QTransformerLearner(spread_net(d, K, seed=1), AlgoConfig(num_bins=K, mc_bound=False), "cpu", prior_net=prior, prior_weight=weight)
        with torch.no_grad():
            tn = learner.target_net
            tv, nv = tn.values(tn.features(batch.obs, batch.bins)), tn.values(tn.first_dim_features(batch.next_obs))  # (B, d, K), (B, K)
            p_s = torch.log_softmax(prior.logits(batch.obs, batch.bins), dim=-1)  # (B, d, K)
            p_next = torch.log_softmax(prior.head_outputs(prior.first_dim_features(batch.next_obs)), dim=-1)  # (B, K)
        pick_s, pick_next = (tv + weight * p_s).argmax(-1), (nv + weight * p_next).argmax(-1)
        if weight > 1e3:
            assert torch.equal(pick_s, p_s.argmax(-1)) and torch.equal(pick_next, p_next.argmax(-1))
        inner = tv.gather(-1, pick_s.unsqueeze(-1)).squeeze(-1)[:, 1:]  # (B, d-1): the next dimension's chosen value
        last = batch.reward + batch.discount * batch.bootstrap * nv.gather(-1, pick_next.unsqueeze(-1)).squeeze(-1)  # (B,)
        got = learner.compute_td_targets(batch)
        torch.testing.assert_close(got, torch.cat([inner, last.unsqueeze(1)], dim=1), rtol=0, atol=1e-6)
        plain = QTransformerLearner(spread_net(d, K, seed=1), AlgoConfig(num_bins=K, mc_bound=False), "cpu").compute_td_targets(batch)
        assert (plain - got).min() >= -1e-6 and (plain - got).max() > 1e-3  # never above the plain maxima; lower here


@pytest.mark.parametrize("weight,tau", [(0.0, 0.0), (0.3, 0.0), (0.3, 0.5), (1e4, 0.0)])
def test_prior_weighted_decoding_is_the_sequential_argmax_of_the_scores(weight, tau):
    d, K = 3, 5
    net = imitation_net(d, K, seed=4)
    obs = torch.randn(16, OBS_DIM)
    bins, chosen = decode(net, obs, support_tau=tau, prior_weight=weight)
    with torch.no_grad():
        h = net.features(obs, bins)  # (B, d, C): teacher-forced with the decoded bins, causal
        values, logits = net.values(h), net.imitation_logits(h)  # (B, d, K) each
    logp = torch.log_softmax(logits, -1)
    for i in range(d):
        allowed = logp[:, i] >= logp[:, i].max(-1, keepdim=True).values + math.log(max(tau, 1e-30)) - 1e-6
        expected = (values[:, i] + weight * logp[:, i]).masked_fill(~allowed, -math.inf).argmax(-1)
        assert torch.equal(bins[:, i], expected)
        torch.testing.assert_close(chosen[:, i], values[:, i].gather(1, expected[:, None])[:, 0], rtol=0, atol=1e-6)  # Q, not the score
        if weight >= 1e4:  # a very large weight is the imitation argmax
            assert torch.equal(bins[:, i], logits[:, i].argmax(-1))
    if weight == 0.0:
        assert torch.equal(bins, decode(net, obs)[0])
    with torch.inference_mode():
        straight, _ = greedy_decode(net, obs, support_tau=tau, prior_weight=weight)
    assert torch.equal(bins, straight) and torch.equal(bins, decode(net, obs, use_cache=False, support_tau=tau, prior_weight=weight)[0])


def test_prior_weight_changes_the_choice_on_this_net_and_policies_take_it():
    net = imitation_net(3, 5, seed=4)
    obs = torch.randn(32, OBS_DIM)
    plain = decode(net, obs)[0]
    assert not torch.equal(decode(net, obs, prior_weight=0.3)[0], plain)  # the test above is not trivial
    disc = ActionDiscretizer([-1.0] * 3, [1.0] * 3, 5)
    trained = QTPolicy(net, disc, {"algo": {"prior_weight": 0.3}})
    assert trained.prior_weight == 0.3
    np.testing.assert_array_equal(trained.act(obs.numpy()), disc.decode(decode(net, obs, prior_weight=0.3)[0]))
    override = QTPolicy(net, disc, {"algo": {"prior_weight": 0.3}}, prior_weight=0.0)
    np.testing.assert_array_equal(override.act(obs.numpy()), disc.decode(plain))


def test_prior_weight_is_checked():
    torch.manual_seed(0)
    net = QTransformerNet(OBS_DIM, 2, 3, 1, tiny_model_config())
    with pytest.raises(ValueError, match="imitation head"):
        QTPolicy(net, ActionDiscretizer([-1.0] * 2, [1.0] * 2, 3), prior_weight=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        QTPolicy(imitation_net(2, 3), ActionDiscretizer([-1.0] * 2, [1.0] * 2, 3), prior_weight=-0.1)
    from qtransformer.config import ConfigError

    with pytest.raises(ConfigError, match="imitation-weight"):
        AlgoConfig(prior_weight=0.1)
    with pytest.raises(ConfigError, match="prior_weight"):
        AlgoConfig(prior_weight=-1.0, imitation_weight=1.0)


def test_support_without_an_imitation_head_is_refused():
    torch.manual_seed(0)
    net = QTransformerNet(OBS_DIM, 2, 3, 1, tiny_model_config())
    with pytest.raises(ValueError, match="imitation head"):
        QTPolicy(net, ActionDiscretizer([-1.0] * 2, [1.0] * 2, 3), support_tau=0.5)


def make_batch(B: int = 8, d: int = 3, K: int = 5, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(B, OBS_DIM, generator=g),
        next_obs=torch.randn(B, OBS_DIM, generator=g),
        bins=torch.randint(K, (B, d), generator=g),
        reward=torch.randint(2, (B,), generator=g).float(),
        discount=torch.full((B,), 0.9),
        bootstrap=torch.tensor([1.0, 0.0] * (B // 2)),
        mc_return=torch.rand(B, generator=g),
        imitate=torch.tensor([1.0, 0.0] * (B // 2)),
    )


def test_td_targets_with_support_take_their_maxima_over_the_target_networks_support():
    net = imitation_net(3, 5, seed=1)
    learner = QTransformerLearner(net, AlgoConfig(num_bins=5, imitation_weight=1.0, support_tau=0.5, support_in_targets=True, mc_bound=False), "cpu")
    batch = make_batch()
    with torch.no_grad():
        h, nh = learner.target_net.features(batch.obs, batch.bins), learner.target_net.first_dim_features(batch.next_obs)
        tv = learner.target_net.values(h).masked_fill(~support_mask(learner.target_net.imitation_logits(h), 0.5), -1.0)
        nv = learner.target_net.values(nh).masked_fill(~support_mask(learner.target_net.imitation_logits(nh), 0.5), -1.0)
    expected = per_dimension_td_targets(tv, nv, batch.reward, batch.discount, batch.bootstrap)
    got = learner.compute_td_targets(batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    plain = QTransformerLearner(imitation_net(3, 5, seed=1), AlgoConfig(num_bins=5, mc_bound=False), "cpu").compute_td_targets(batch)
    assert (got - plain).abs().max() > 1e-3  # the support does change the TD targets here
    assert torch.isfinite(got).all()


def test_update_adds_the_weighted_imitation_loss_on_the_chosen_steps():
    net = imitation_net(3, 5, seed=1)
    cfg = AlgoConfig(num_bins=5, imitation_weight=0.5, warmup_steps=0, mc_bound=False)
    learner = QTransformerLearner(net, cfg, "cpu")
    batch = make_batch()
    with torch.no_grad():
        h = learner.online.features(batch.obs, batch.bins)
        q = qtransformer_loss(learner.online.values(h), batch.bins, learner.compute_td_targets(batch), cfg.alpha, reference_bins=16)
        imitation = masked_bc_loss(learner.online.imitation_logits(h), batch.bins, batch.imitate)
    metrics = learner.update(batch)
    assert metrics["imitation_loss"] == pytest.approx(imitation.item(), abs=1e-6)
    assert metrics["loss"] == pytest.approx(q["loss"].item() + 0.5 * imitation.item(), abs=1e-6)
    assert learner.online.imitation_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_imitation_stop_gradient_leaves_the_trunk_to_the_values(stop_gradient):
    # The same network, batch and TD loss under two imitation weights: through a stop-gradient the weight
    # can change nothing but the imitation head; without it, the shared trunk moves with the weight too.
    batch = make_batch()
    start = imitation_net(3, 5, seed=1).imitation_head.weight.detach().clone()
    after = []
    for weight in (0.5, 5.0):
        cfg = AlgoConfig(num_bins=5, imitation_weight=weight, imitation_stop_gradient=stop_gradient, warmup_steps=0, mc_bound=False)
        learner = QTransformerLearner(imitation_net(3, 5, seed=1).train(), cfg, "cpu")
        for _ in range(3):
            learner.update(batch)
        after.append(dict(learner.online.named_parameters()))
        assert (after[-1]["imitation_head.weight"] - start).abs().max() > 1e-4  # the head itself learns
    trunk = [k for k in after[0] if not k.startswith("imitation_head.")]
    moved = max((after[0][k] - after[1][k]).abs().max().item() for k in trunk)
    if stop_gradient:
        assert moved == 0.0
    else:
        assert moved > 1e-4


def test_imitation_stop_gradient_needs_the_head():
    from qtransformer.config import ConfigError

    with pytest.raises(ConfigError, match="imitation-weight"):
        AlgoConfig(imitation_stop_gradient=True)


def test_a_stop_gradient_imitation_head_leaves_training_exactly_as_without_it():
    # From one seed, a network with the head starts with every other weight equal to one without it, and
    # through the stop-gradient (and its own clipping) the values' training is the same to the last bit.
    batches = [make_batch(seed=s) for s in range(4)]
    runs = {}
    for with_head in (False, True):
        torch.manual_seed(3)
        net = QTransformerNet(OBS_DIM, 3, 5, 1, tiny_model_config(), imitation_head=with_head)
        cfg = AlgoConfig(num_bins=5, imitation_weight=1.0 if with_head else 0.0, imitation_stop_gradient=with_head, warmup_steps=0)
        learner = QTransformerLearner(net, cfg, "cpu")
        for b in batches:
            learner.update(b)
        runs[with_head] = {k: v for k, v in learner.online.state_dict().items() if not k.startswith("imitation_head.")}
    assert runs[False].keys() == runs[True].keys()
    for k, v in runs[False].items():
        assert torch.equal(v, runs[True][k]), k


# -- a separate BC network as the prior (QTPolicy(prior=...), eval --prior-checkpoint) --------------------
def spread_net(d: int, K: int, seed: int, num_tasks: int = 1) -> QTransformerNet:
    torch.manual_seed(seed)
    net = QTransformerNet(OBS_DIM, d, K, num_tasks, tiny_model_config())
    with torch.no_grad():  # spread outputs so that argmaxes stand clear of float noise
        net.head.weight.mul_(5.0)
        net.bin_embedding.weight.normal_(0.0, 1.0)
    return net.eval()


def inputs(obs: torch.Tensor) -> ModelInputs:
    return ModelInputs(obs=obs, images=None, task=None, language=None, single=False)


@pytest.mark.parametrize("weight,tau", [(0.3, 0.0), (0.3, 0.5), (0.0, 0.5), (0.0, 1.0)])
def test_decoding_with_a_separate_prior_is_the_sequential_argmax_over_its_probabilities(weight, tau):
    """Q from one network, log p from another (a BC network's head, fed the same chosen bins)."""
    d, K = 3, 5
    qnet, bcnet = spread_net(d, K, seed=4), spread_net(d, K, seed=9)
    obs = torch.randn(16, OBS_DIM)
    bins, chosen = decode(qnet, obs, support_tau=tau, prior_weight=weight, prior=(bcnet, inputs(obs)))
    with torch.no_grad():
        values = qnet.values(qnet.features(obs, bins))  # (B, d, K), teacher-forced with the decoded bins
        logp = torch.log_softmax(bcnet.head_outputs(bcnet.features(obs, bins)), -1)  # (B, d, K)
    for i in range(d):
        allowed = logp[:, i] >= logp[:, i].max(-1, keepdim=True).values + math.log(max(tau, 1e-30)) - 1e-6
        expected = (values[:, i] + weight * logp[:, i]).masked_fill(~allowed, -math.inf).argmax(-1)
        assert torch.equal(bins[:, i], expected)
        torch.testing.assert_close(chosen[:, i], values[:, i].gather(1, expected[:, None])[:, 0], rtol=0, atol=1e-6)
    assert torch.equal(bins, decode(qnet, obs, use_cache=False, support_tau=tau, prior_weight=weight, prior=(bcnet, inputs(obs)))[0])
    if tau == 1.0:  # only the prior's likeliest bin: the BC network's own greedy decoding
        assert torch.equal(bins, decode(bcnet, obs)[0])
    assert not torch.equal(bins, decode(qnet, obs)[0])  # the prior changed the choice: the test is not trivial


def test_a_policy_with_a_bc_prior_decodes_at_the_measured_weight_and_refuses_what_is_not_a_bc_prior():
    from qtransformer.policy import PRIOR_WEIGHT

    d, K = 3, 5
    disc = ActionDiscretizer([-1.0] * d, [1.0] * d, K)
    qnet, bcnet = spread_net(d, K, seed=4), spread_net(d, K, seed=9)
    bc = QTPolicy(bcnet, disc, {"algo": {"method": "bc"}})
    obs = torch.randn(32, OBS_DIM)
    policy = QTPolicy(qnet, disc, {}, prior=bc)
    assert PRIOR_WEIGHT == 0.01 and policy.prior_weight == PRIOR_WEIGHT and policy.support_tau == 0.0
    np.testing.assert_array_equal(policy.act(obs.numpy()), disc.decode(decode(qnet, obs, prior_weight=0.01, prior=(bcnet, inputs(obs)))[0]))
    np.testing.assert_array_equal(QTPolicy(qnet, disc, {}, prior=bc, support_tau=1.0, prior_weight=0.0).act(obs.numpy()), bc.act(obs.numpy()))
    np.testing.assert_array_equal(QTPolicy(qnet, disc, {}, prior=bc, prior_weight=0.0).act(obs.numpy()), QTPolicy(qnet, disc).act(obs.numpy()))
    v = policy.q_values(obs.numpy())  # the value of the action the rule chooses
    np.testing.assert_allclose(v, decode(qnet, obs, prior_weight=0.01, prior=(bcnet, inputs(obs)))[1][:, -1].numpy(), rtol=0, atol=1e-6)

    with pytest.raises(ValueError, match="--algo.method qtransformer.*must be a BC run"):
        QTPolicy(qnet, disc, {}, prior=QTPolicy(bcnet, disc, {}))
    with pytest.raises(ValueError, match="discretises actions differently"):
        QTPolicy(qnet, disc, {}, prior=QTPolicy(bcnet, ActionDiscretizer([-2.0] * d, [1.0] * d, K), {"algo": {"method": "bc"}}))
    with pytest.raises(ValueError, match="other tasks"):
        QTPolicy(qnet, disc, {"task_names": ["push"]}, prior=QTPolicy(bcnet, disc, {"algo": {"method": "bc"}, "task_names": ["pull"]}))
    with pytest.raises(ValueError, match="compile"):
        QTPolicy(qnet, disc, {}, prior=bc, compile=True)
