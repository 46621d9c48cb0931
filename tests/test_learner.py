"""The learner (algo/learner.py): TD targets from the target network, Polyak step, eval-mode target network, no dead layer."""

from __future__ import annotations

import copy

import pytest
import torch

from qtransformer.algo import QTransformerLearner
from qtransformer.algo.learner import _param_groups
from qtransformer.algo.losses import qtransformer_loss
from qtransformer.algo.targets import per_dimension_td_targets
from qtransformer.config import AlgoConfig
from qtransformer.data import Batch

OBS_DIM, D, K, TASKS, B = 4, 3, 5, 3, 12


def make_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(B, OBS_DIM, generator=g),
        bins=torch.randint(K, (B, D), generator=g),
        reward=torch.rand(B, generator=g),
        discount=torch.full((B,), 0.9),
        bootstrap=(torch.rand(B, generator=g) < 0.7).float(),
        next_obs=torch.randn(B, OBS_DIM, generator=g),
        mc_return=torch.rand(B, generator=g),
        task=torch.arange(B) % TASKS,
    )


def make_learner(make_net, dropout=0.0, **algo):
    net = make_net(OBS_DIM, D, K, num_tasks=TASKS, seed=0, dropout=dropout)
    cfg = AlgoConfig(num_bins=K, **{"warmup_steps": 0, **algo})
    return QTransformerLearner(net, cfg, "cpu")


def perturb_target_net(learner):
    """Make the target network differ from the online network, so that which one is used is visible."""
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in learner.target_net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_polyak_step_after_one_update(make_net):
    tau = 0.2
    learner = make_learner(make_net, tau=tau)
    perturb_target_net(learner)
    old_target_net = {k: v.clone() for k, v in learner.target_net.named_parameters()}
    learner.update(make_batch())
    new_online = dict(learner.online.named_parameters())
    for name, p in learner.target_net.named_parameters():
        expected = (1 - tau) * old_target_net[name] + tau * new_online[name].detach()
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-6, msg=name)
        assert not torch.equal(p, old_target_net[name]), f"target network {name} did not move"
    for (name, tb), ob in zip(learner.target_net.named_buffers(), learner.online.buffers(), strict=True):
        assert torch.equal(tb, ob), name


def test_tau_zero_leaves_the_target_network_bit_identical(make_net):
    learner = make_learner(make_net, tau=0.0)
    perturb_target_net(learner)
    before = snapshot(learner.target_net)
    online_before = snapshot(learner.online)
    learner.update(make_batch())
    after = snapshot(learner.target_net)
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(online_before[k], v) for k, v in snapshot(learner.online).items())


def test_target_network_stays_in_eval_mode_and_has_no_dropout_noise(make_net):
    learner = make_learner(make_net, dropout=0.5)
    batch = make_batch()
    for _ in range(2):
        learner.update(batch)
    assert all(not m.training for m in learner.target_net.modules())
    assert all(m.training for m in learner.online.modules())
    assert all(not p.requires_grad for p in learner.target_net.parameters())
    # dropout 0.5 in train mode would make these differ
    torch.testing.assert_close(learner.compute_td_targets(batch), learner.compute_td_targets(batch), rtol=0, atol=0)


def test_every_online_parameter_moves_after_one_step(make_net):
    # no weight decay, so only a gradient can move a parameter
    learner = make_learner(make_net, weight_decay=0.0)
    before = {k: v.detach().clone() for k, v in learner.online.named_parameters()}
    names = set(before)
    assert any("task_embedding" in n for n in names) and any("bin_embedding" in n for n in names)
    learner.update(make_batch())
    for name, p in learner.online.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"
        assert not torch.equal(p.detach(), before[name]), f"{name} did not move"


@pytest.mark.parametrize(
    "algo, skip",
    [
        ({"mc_bound": True}, False),
        ({"mc_bound": False}, False),
        ({"mc_bound": False, "n_step": 3, "n_step_mode": "all_dims"}, True),
        ({"mc_bound": False, "n_step": 3, "n_step_mode": "last_dim"}, False),
        ({"mc_bound": False, "n_step": 1, "n_step_mode": "all_dims"}, False),  # one step: nothing to skip
    ],
)
def test_td_targets_come_from_the_target_network(make_net, algo, skip):
    learner = make_learner(make_net, **algo)
    perturb_target_net(learner)
    batch = make_batch()
    with torch.no_grad():
        tv = learner.target_net(batch.obs, batch.bins, batch.task)
        nv = learner.target_net.first_dim_values(batch.next_obs, batch.task)
    expected = per_dimension_td_targets(
        tv, nv, batch.reward, batch.discount, batch.bootstrap,
        batch.mc_return if algo["mc_bound"] else None, skip_dim_max=skip,
    )
    torch.testing.assert_close(learner.compute_td_targets(batch), expected, rtol=0, atol=1e-6)
    # and not from the online network
    with torch.no_grad():
        tv_on = learner.online(batch.obs, batch.bins, batch.task)
        nv_on = learner.online.first_dim_values(batch.next_obs, batch.task)
    wrong = per_dimension_td_targets(tv_on, nv_on, batch.reward, batch.discount, batch.bootstrap, skip_dim_max=skip)
    assert (learner.compute_td_targets(batch) - wrong).abs().max() > 1e-3


@pytest.mark.parametrize("bin_smoothing", [0.0, 0.125])
def test_reported_loss_is_the_loss_of_the_online_values_against_the_target_networks_td_targets(make_net, bin_smoothing):
    learner = make_learner(make_net, alpha=0.7, mc_bound=False, bin_smoothing=bin_smoothing)
    perturb_target_net(learner)
    batch = make_batch()
    online = copy.deepcopy(learner.online).train()
    with torch.no_grad():
        values = online(batch.obs, batch.bins, batch.task)
        expected = qtransformer_loss(values, batch.bins, learner.compute_td_targets(batch), 0.7, reference_bins=learner.cfg.conservative_bins,
                                     bin_smoothing=bin_smoothing)
        if bin_smoothing:  # the smoothed terms differ from the paper's on these values, so the learner must pass it on
            plain = qtransformer_loss(values, batch.bins, learner.compute_td_targets(batch), 0.7, reference_bins=learner.cfg.conservative_bins)
            assert abs(plain["td_loss"].item() - expected["td_loss"].item()) > 1e-3
    assert learner.cfg.conservative_bins == 16  # the default: each unseen bin weighed by alpha / 15 whatever K
    metrics = learner.update(batch)
    assert metrics["loss"] == pytest.approx(expected["loss"].item(), abs=1e-6)
    assert metrics["td_loss"] == pytest.approx(expected["td_loss"].item(), abs=1e-6)
    assert metrics["conservative_loss"] == pytest.approx(expected["conservative_loss"].item(), abs=1e-6)
    assert all(isinstance(v, float) for v in metrics.values())
    assert learner.num_updates == 1


def test_learning_rate_warms_up_linearly(make_net):
    learner = make_learner(make_net, lr=1e-3, warmup_steps=4)
    lrs = [learner.update(make_batch(i))["lr"] for i in range(6)]
    # lr * min(1, (updates + 1) / warmup): 1/4, 2/4, 3/4, 1, 1, 1 of 1e-3
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_weight_decay_only_on_matrices(make_net):
    net = make_net(OBS_DIM, D, K, num_tasks=TASKS)
    decay, no_decay = _param_groups(net, 0.01)
    named = dict(net.named_parameters())
    decay_ids = {id(p) for p in decay["params"]}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)
    for name, p in named.items():
        should = p.dim() >= 2 and "embedding" not in name
        assert (id(p) in decay_ids) == should, name


def test_bf16_autocast_step_stays_close_to_fp32(make_net):
    """amp_bf16 runs the passes in bf16 on CPU; the loss and the update stay near the fp32 ones."""
    fp32 = make_learner(make_net)
    bf16 = make_learner(make_net)
    bf16.amp_bf16 = True
    batch = make_batch(3)
    m32, m16 = fp32.update(batch), bf16.update(batch)
    assert m16["loss"] == pytest.approx(m32["loss"], rel=0.05)
    assert m16["loss"] != m32["loss"]  # the bf16 path really ran in lower precision
    for p32, p16 in zip(fp32.online.parameters(), bf16.online.parameters(), strict=True):
        torch.testing.assert_close(p16, p32, atol=5e-3, rtol=0.05)


def test_state_dict_round_trip_continues_bit_identically(make_net):
    """load_state_dict(state_dict()) on a differently initialised learner: the next update matches."""
    learner = make_learner(make_net)
    learner.update(make_batch(0))
    other = QTransformerLearner(make_net(OBS_DIM, D, K, num_tasks=TASKS, seed=1), learner.cfg, "cpu")
    other.load_state_dict(copy.deepcopy(learner.state_dict()))
    assert other.num_updates == learner.num_updates == 1
    assert learner.update(make_batch(1)) == other.update(make_batch(1))
    for net in ("online", "target_net"):
        for (name, a), b in zip(learner.state_dict()[net].items(), other.state_dict()[net].values(), strict=True):
            assert torch.equal(a, b), f"{net} {name}"


def test_compiled_training_step_matches_the_eager_one(make_net):
    """compile=True (train --compile): the same updates as eager, to float rounding, from the same start."""
    eager = make_learner(make_net)
    net = make_net(OBS_DIM, D, K, num_tasks=TASKS, seed=0)
    compiled = QTransformerLearner(net, eager.cfg, "cpu", compile=True)
    start = snapshot(net)
    assert compiled.compiled and not eager.compiled
    for step in range(3):
        batch = make_batch(step)
        out_e, out_c = eager.update(batch), compiled.update(batch)
        assert out_c["loss"] == pytest.approx(out_e["loss"], rel=1e-4, abs=1e-6)
    # Compared by what the networks compute: the attention's key bias gets gradients of 0 up to rounding
    # (softmax ignores a shift), which AdamW's normalisation turns into steps of either sign, so those
    # parameters differ while every output agrees.
    batch = make_batch(9)
    for name in ("online", "target_net"):
        net_e, net_c = getattr(eager, name).eval(), getattr(compiled, name).eval()
        with torch.no_grad():
            torch.testing.assert_close(net_c(batch.obs, batch.bins, batch.task), net_e(batch.obs, batch.bins, batch.task), rtol=1e-4, atol=1e-5, msg=name)
    moved = any(not torch.equal(v, start[k]) for k, v in compiled.online.state_dict().items())
    assert moved and eager.num_updates == compiled.num_updates == 3


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_a_step_with_no_gradient_reports_a_norm_of_zero(make_net, grad_clip):
    learner = make_learner(make_net, grad_clip=grad_clip)
    before = snapshot(learner.online)
    loss = torch.zeros((), requires_grad=True)  # reaches no parameter: no gradient at all
    assert learner._step(loss) == 0.0
    after = snapshot(learner.online)
    assert all(torch.equal(before[k], after[k]) for k in before)  # AdamW skips parameters without a gradient
