"""The learner: owns the online and target networks and the optimizer; `update(batch)` is one step.

Two things are called "target" in Q-learning; here the names keep them apart: `target_net` is the
Polyak-averaged copy of the online network, `td_targets` (B, d) are the values y the TD loss regresses
the online network's Q-values onto (computed from the target network: algo/targets.py).

Under torchrun (`ddp=True`, distributed.py) the online network's training pass runs through
DistributedDataParallel, which averages the gradients of every rank's shard during backward: the
gradient of the global batch's mean loss. Clipping, AdamW and the Polyak update then run alike on
every rank, so the online and target networks stay identical everywhere."""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from typing import Optional

import torch

from ..config import AlgoConfig
from ..data.batch import Batch
from ..nets import QTransformerNet
from .losses import bc_loss, data_bin_values, masked_bc_loss, qtransformer_loss
from .support import prior_choice, restrict, support_mask
from .targets import per_dimension_td_targets


def _param_groups(net: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (decay if p.dim() >= 2 and "embedding" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _adamw(groups: list[dict], lr: float) -> torch.optim.AdamW:
    """AdamW with its fused kernel where torch has one for the device (CPU from torch 2.4; measured about
    4 % of a default step saved: docs/benchmarks.md, "Speed"), else the multi-tensor one."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr)


class _TrainingPass(torch.nn.Module):
    """The online network's teacher-forced training pass as one `forward`, so that DistributedDataParallel
    can wrap it (DDP averages the gradients of what runs through its forward only)."""

    def __init__(self, net: QTransformerNet, imitation_stop_gradient: bool = False):
        super().__init__()
        self.net = net
        self.imitation_stop_gradient = imitation_stop_gradient

    def forward(self, obs, bins, task=None, images=None, bc: bool = False):
        """-> (the value head's outputs (B, d, K), or (B, d, K, M) with value atoms; imitation logits (B, d, K)
        or None); with bc: (the head's logits (B, d, K), None)."""
        if bc:
            return self.net.logits(obs, bins, task, images), None
        h = self.net.features(obs, bins, task, images)  # (B, d, C)
        imitation = None
        if self.net.imitation_head is not None:  # (B, d, K); through a stop-gradient, the trunk learns from the values alone
            imitation = self.net.imitation_logits(h.detach() if self.imitation_stop_gradient else h)
        return self.net.head_outputs(h), imitation


class _TargetPass(torch.nn.Module):
    """The target network's two passes for the TD targets as one `forward`, so that torch.compile can
    take them as one graph: -> (trunk output at s' for the first dimension (B, C), teacher-forced trunk
    outputs at s (B, d, C) or None when `teacher_forced` is False)."""

    def __init__(self, net: QTransformerNet):
        super().__init__()
        self.net = net

    def forward(self, obs, bins, task, images, next_obs, next_images, teacher_forced: bool = True):
        next_h = self.net.first_dim_features(next_obs, task, next_images)  # (B, C)
        h = self.net.features(obs, bins, task, images) if teacher_forced else None  # (B, d, C)
        return next_h, h


class QTransformerLearner:
    """`update(batch)` takes a `Batch` (data/batch.py) with every tensor on the learner's device; a
    network with an imitation head needs its `imitate` mask. `ddp`: the process is one of several in a
    torch.distributed process group (distributed.py) and `batch` is its shard of the global batch.
    `compile`: the online network's training pass and the target network's passes run through
    torch.compile (compiled at the first update; the backward pass and AdamW stay eager).
    `prior_net`, `prior_weight`: a frozen BC network whose choice (argmax Q + prior_weight log p) sets the
    TD targets' maxima (`algo.prior_in_targets`); None: the plain maxima."""

    def __init__(
        self, net: QTransformerNet, cfg: AlgoConfig, device: torch.device, amp_bf16: bool = False, ddp: bool = False, compile: bool = False,
        prior_net: Optional[QTransformerNet] = None, prior_weight: float = 0.0,
    ):
        self.cfg = cfg
        self.prior_net = None if prior_net is None else prior_net.to(device).requires_grad_(False).eval()
        self.prior_weight = prior_weight
        self.device = torch.device(device)
        self.online = net.to(self.device)
        self.target_net = copy.deepcopy(self.online)
        self.target_net.requires_grad_(False)
        self.target_net.eval()  # always: no dropout noise in the TD targets
        self.optimizer = _adamw(_param_groups(self.online, cfg.weight_decay), cfg.lr)
        self.amp_bf16 = amp_bf16
        self.num_updates = 0
        self.ddp = ddp
        self.training_pass: torch.nn.Module = _TrainingPass(self.online, cfg.imitation_stop_gradient)
        if ddp:  # broadcasts rank 0's parameters once; buffers (the observation normaliser) never change
            self.training_pass = torch.nn.parallel.DistributedDataParallel(
                self.training_pass, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                forward_sync_buffers=False, static_graph=True,  # static: the same parameters are used at every step
            )
        self.target_pass: torch.nn.Module = _TargetPass(self.target_net)
        self.compiled = compile
        if compile:  # dynamic=False: the batch shape is fixed, so one graph each (recompiled only if it changes)
            self.training_pass = torch.compile(self.training_pass, dynamic=False)
            self.target_pass = torch.compile(self.target_pass, dynamic=False)

    @property
    def policy_net(self) -> QTransformerNet:
        """The network the policy acts with (`algo.act_with`): the target network (Polyak-averaged) or the online one."""
        return self.target_net if self.cfg.act_with == "target" else self.online

    def _autocast(self):
        if not self.amp_bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def learning_rate(self) -> float:
        if self.cfg.warmup_steps <= 0:
            return self.cfg.lr
        return self.cfg.lr * min(1.0, (self.num_updates + 1) / self.cfg.warmup_steps)

    @torch.no_grad()
    def compute_td_targets(self, batch: Batch) -> torch.Tensor:
        """TD targets (B, d) from the target network (one teacher-forced pass at s, one prefix pass at s')."""
        skip_dim_max = self.cfg.n_step > 1 and self.cfg.n_step_mode == "all_dims"
        net = self.target_net
        with self._autocast():
            next_h, h = self.target_pass(batch.obs, batch.bins, batch.task, batch.images, batch.next_obs, batch.next_images, not skip_dim_max)
            next_values = net.values(next_h)  # (B, K)
            if skip_dim_max:  # the per-dimension maxima are not used: the teacher-forced pass was skipped
                target_net_values = next_values.new_zeros(next_values.shape[0], self.online.action_dim, next_values.shape[1])  # (B, d, K)
            else:
                target_net_values = net.values(h)  # (B, d, K)
            if self.cfg.support_in_targets:  # the maxima range over the target network's imitation support only
                tau = self.cfg.support_tau
                next_values = restrict(next_values, support_mask(net.imitation_logits(next_h), tau))
                if h is not None:
                    target_net_values = restrict(target_net_values, support_mask(net.imitation_logits(h), tau))
            if self.prior_net is not None:  # the maxima take the value of the bin decoding with the prior chooses
                prior, w = self.prior_net, self.prior_weight
                next_logits = prior.head_outputs(prior.first_dim_features(batch.next_obs, batch.task, batch.next_images))  # (B, K)
                next_values = prior_choice(next_values, next_logits, w)
                if h is not None:
                    target_net_values = prior_choice(target_net_values, prior.logits(batch.obs, batch.bins, batch.task, batch.images), w)  # (B, d, K)
        return per_dimension_td_targets(
            target_net_values.float(),
            next_values.float(),
            batch.reward,
            batch.discount,
            batch.bootstrap,
            batch.mc_return if self.cfg.mc_bound else None,
            skip_dim_max=skip_dim_max,
        )

    def update(self, batch: Batch) -> dict[str, float]:
        self.online.train()
        if self.cfg.method == "bc":
            return self._bc_update(batch)
        td_targets = self.compute_td_targets(batch)  # (B, d)
        with self._autocast():
            head, imitation = self.training_pass(batch.obs, batch.bins, batch.task, batch.images)  # (B, d, K[, M]), (B, d, K)
        losses, values = self._losses(head, batch, td_targets)  # values (B, d, K)
        if imitation is not None:
            losses["imitation_loss"] = masked_bc_loss(imitation.float(), batch.bins, batch.imitate)
            losses["loss"] = losses["loss"] + self.cfg.imitation_weight * losses["imitation_loss"]

        grad_norm = self._step(losses["loss"])

        with torch.no_grad():
            q_data = data_bin_values(values.float(), batch.bins)  # (B, d)
            K = values.shape[-1]
            q_all_mean = values.float().mean(-1)  # (B, d)
            q_unseen = (q_all_mean * K - q_data) / (K - 1)
        out = {
            "loss": losses["loss"].item(),
            "td_loss": losses["td_loss"].item(),
            "conservative_loss": losses["conservative_loss"].item(),
            "q_data": q_data.mean().item(),
            "q_unseen": q_unseen.mean().item(),
            "td_target": td_targets.mean().item(),
            "grad_norm": float(grad_norm),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        if imitation is not None:
            out["imitation_loss"] = losses["imitation_loss"].item()
        return self._mean_over_ranks(out)

    def _losses(self, head: torch.Tensor, batch: Batch, td_targets: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """The Q-Transformer loss terms from the value head's outputs (B, d, K) or (B, d, K, M), and the values (B, d, K)."""
        head = head.float()
        values = self.online.values_from_head(head)  # (B, d, K)
        value_logits = head if self.online.value_atoms else None  # (B, d, K, M)
        losses = qtransformer_loss(
            values, batch.bins, td_targets, self.cfg.alpha, self.cfg.regularizer, self.cfg.conservative_bins, value_logits, self.cfg.hl_gauss_sigma,
            self.cfg.bin_smoothing,
        )
        return losses, values

    def _mean_over_ranks(self, metrics: dict[str, float]) -> dict[str, float]:
        """Under DDP, each metric's mean over the ranks (the same on every rank); else `metrics` itself."""
        if not self.ddp:
            return metrics
        t = torch.tensor(list(metrics.values()), dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return dict(zip(metrics, (t / torch.distributed.get_world_size()).tolist(), strict=True))

    def _step(self, loss: torch.Tensor) -> float:
        """Backward, clip, AdamW step, Polyak update of the target network; returns the gradient norm before clipping.

        When the loss or the gradient norm is not finite, nothing is stepped: the networks and the
        optimizer keep the state they had before this update (`find_nonfinite` then says why)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.online.parameters() if p.grad is not None]
        if self.cfg.imitation_stop_gradient:  # the head is clipped on its own: its gradient must not rescale the values'
            head = {id(p) for p in self.online.imitation_head.parameters()}
            groups = [[p for p in params if id(p) not in head], [p for p in params if id(p) in head]]
        else:
            groups = [params]
        if self.cfg.grad_clip > 0:
            norms = [torch.nn.utils.clip_grad_norm_(g, self.cfg.grad_clip) for g in groups if g]
        else:
            norms = [torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in g])) for g in groups if g]
        grad_norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())  # of every gradient, as one vector
        grad_norm = float(grad_norm)  # the scalars the caller reads anyway, read before the step
        loss_value = loss.item() if not self.ddp else self._mean_over_ranks({"loss": loss.item()})["loss"]  # every rank decides alike
        if not (math.isfinite(grad_norm) and math.isfinite(loss_value)):
            return grad_norm
        self.optimizer.step()
        self.polyak_update()
        self.num_updates += 1
        return grad_norm

    # -- non-finite values -------------------------------------------------------------------------
    def nonfinite_state(self) -> Optional[str]:
        """The first tensor of the online or target network or of the optimizer state that holds NaN or
        inf (e.g. 'online parameter head.weight', 'target network parameter head.bias'), or None when all
        are finite."""
        with torch.no_grad():
            for label, net in (("online", self.online), ("target network", self.target_net)):
                for name, t in [*net.named_parameters(), *net.named_buffers()]:
                    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                        return f"{label} parameter {name}"
            for idx, state in enumerate(self.optimizer.state.values()):
                for key, t in state.items():
                    if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                        return f"optimizer state {key} of parameter {idx}"
        return None

    @torch.no_grad()
    def find_nonfinite(self, batch: Batch) -> tuple[str, str]:
        """After an update whose loss or gradient norm was not finite (and so was not applied): the first
        quantity of that update, in the order it is computed, that holds NaN or inf, as (quantity,
        detail). Quantities: 'batch inputs', 'parameters', 'td targets', 'values', 'td loss',
        'conservative loss', 'imitation loss', 'bc loss', 'loss', 'gradients', 'grad norm'. Slow: call it only on failure."""

        def bad(t: torch.Tensor) -> bool:
            return t.is_floating_point() and not bool(torch.isfinite(t).all())

        for name, t in batch.tensors():
            if bad(t):
                return "batch inputs", f"batch field '{name}'"
        state = self.nonfinite_state()
        if state is not None:
            return "parameters", state
        if self.cfg.method == "bc":
            with self._autocast():
                logits = self.online.logits(batch.obs, batch.bins, batch.task, batch.images)  # (B, d, K)
            if bad(logits):
                return "values", "the online network's logits"
            if bad(bc_loss(logits.float(), batch.bins)):
                return "bc loss", "the cross-entropy of the data's bins"
        else:
            td_targets = self.compute_td_targets(batch)  # (B, d)
            if bad(td_targets):
                return "td targets", "the TD targets computed with the target network"
            with self._autocast():
                h = self.online.features(batch.obs, batch.bins, batch.task, batch.images)  # (B, d, C)
                head = self.online.head_outputs(h)  # (B, d, K[, M])
            losses, values = self._losses(head, batch, td_targets)  # values (B, d, K)
            if bad(values):
                return "values", "the online network's Q-values"
            if self.online.imitation_head is not None:
                losses["imitation_loss"] = masked_bc_loss(self.online.imitation_logits(h), batch.bins, batch.imitate)
            for key, label in (("td_loss", "td loss"), ("conservative_loss", "conservative loss"), ("imitation_loss", "imitation loss"), ("loss", "loss")):
                if key not in losses:
                    continue
                if bad(losses[key]):
                    return label, f"'{key}'"
        for name, p in self.online.named_parameters():
            if p.grad is not None and bad(p.grad):
                return "gradients", f"the gradient of {name}"
        return "grad norm", "the global gradient norm overflowed"

    def max_abs_parameter(self) -> float:
        """The largest finite parameter magnitude of the online network (a symptom of divergence)."""
        with torch.no_grad():
            return max((float(p.detach().nan_to_num(0.0, 0.0, 0.0).abs().max()) for p in self.online.parameters() if p.numel()), default=0.0)

    def _bc_update(self, batch: Batch) -> dict[str, float]:
        """The behaviour-cloning baseline: cross-entropy of the data's bins, same network and optimizer."""
        with self._autocast():
            logits, _ = self.training_pass(batch.obs, batch.bins, batch.task, batch.images, bc=True)  # (B, d, K)
        loss = bc_loss(logits.float(), batch.bins)
        grad_norm = self._step(loss)
        with torch.no_grad():
            accuracy = (logits.argmax(-1) == batch.bins).float().mean()
        return self._mean_over_ranks({"loss": loss.item(), "bc_loss": loss.item(), "bin_accuracy": accuracy.item(),
                                      "grad_norm": grad_norm, "lr": self.optimizer.param_groups[0]["lr"]})

    @torch.no_grad()
    def polyak_update(self) -> None:
        """target_net <- target_net + tau * (online - target_net); buffers copied."""
        online_params = list(self.online.parameters())
        target_params = list(self.target_net.parameters())
        torch._foreach_lerp_(target_params, online_params, self.cfg.tau)
        for tb, ob in zip(self.target_net.buffers(), self.online.buffers(), strict=True):
            tb.copy_(ob)

    # -- state (for checkpoints and exact resume) --------------------------------------------------
    def state_dict(self) -> dict:
        """What an exact resume needs: {"online": state dict, "target_net": state dict, "optimizer":
        AdamW's state dict, "num_updates": int}. Tensors are the live ones (copy before changing them)."""
        return {
            "online": self.online.state_dict(),
            "target_net": self.target_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned, in place (tensors may be on any device).

        Which AdamW kernel runs (fused, multi-tensor) stays this machine's choice, not the saved run's: a
        state from a GPU or from an older version must not impose its own."""
        self.online.load_state_dict(state["online"])
        self.target_net.load_state_dict(state["target_net"])
        kernel = {k: self.optimizer.param_groups[0].get(k) for k in ("fused", "foreach")}
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group.update(kernel)
        self.num_updates = int(state["num_updates"])
