"""The deployable policy: greedy autoregressive decoding (KV-cached), exploration, value queries."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .actions import ActionDiscretizer
from .algo.support import restrict, support_mask
from .nets import QTransformerNet


def _choose(values: torch.Tensor, epsilon: float, temperature: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """values (B, K) -> bins (B,): argmax, or a softmax sample at `temperature`, then epsilon-uniform."""
    if temperature > 0:
        probs = torch.softmax(values.float() / temperature, dim=-1)
        bins = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(values.device)
    else:
        bins = values.argmax(dim=-1)
    if epsilon > 0:
        B, K = values.shape
        explore = torch.rand(B, generator=generator) < epsilon
        random_bins = torch.randint(K, (B,), generator=generator)
        bins = torch.where(explore.to(values.device), random_bins.to(values.device), bins)
    return bins


def _choice_values(net: QTransformerNet, h: torch.Tensor, support_tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Trunk output (B, C) -> (values (B, K), the values to choose from: outside the imitation support
    at `support_tau` set to -inf; the values themselves at tau = 0)."""
    values = net.values(h)  # (B, K)
    if support_tau <= 0:
        return values, values
    return values, restrict(values, support_mask(net.imitation_logits(h), support_tau))


@torch.inference_mode()
def decode(
    net: QTransformerNet,
    obs: torch.Tensor,
    task: Optional[torch.Tensor] = None,
    use_cache: bool = True,
    images: Optional[dict] = None,
    epsilon: float = 0.0,
    temperature: float = 0.0,
    generator: Optional[torch.Generator] = None,
    support_tau: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Autoregressive decoding over action dimensions. obs (B, obs_dim) -> bins (B, d), values (B, d).

    values[:, i] is the value of the bin chosen at dimension i. With the cache, one pass over the prefix
    then d-1 one-token steps; without it, d full passes over the growing sequence (same result).
    support_tau > 0 chooses (greedily or by temperature) only among bins whose imitation probability is
    >= tau x the best bin's (algo/support.py); epsilon-exploration stays uniform over all bins.
    """
    B, d = obs.shape[0], net.action_dim  # obs is (B, obs_dim), (B, 0) for an image-only model
    bins = torch.zeros(B, d, dtype=torch.long, device=obs.device)
    chosen_values = torch.zeros(B, d, device=obs.device)
    if use_cache:
        h, cache = net.start_features(obs, task, images)  # (B, C)
    for i in range(d):
        if not use_cache:
            h = net.features(obs, bins, task, images)[:, i]  # (B, C): only bins < i influence it (causal)
        elif i > 0:
            h, cache = net.step_features(bins[:, i - 1], i, cache)
        values, allowed = _choice_values(net, h, support_tau)  # (B, K) each
        bins[:, i] = _choose(allowed, epsilon, temperature, generator)
        chosen_values[:, i] = values.gather(1, bins[:, i : i + 1]).squeeze(1)
    return bins, chosen_values


def greedy_decode(
    net: QTransformerNet,
    obs: torch.Tensor,
    task: Optional[torch.Tensor] = None,
    images: Optional[dict] = None,
    support_tau: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding with the KV cache, the same result as `decode(net, obs, task, support_tau=...)`,
    written as one straight-line trace (d is fixed per network) so that torch.compile fuses all d steps
    into one program: see QTPolicy(compile=True). obs (B, obs_dim) -> bins (B, d), values (B, d)."""
    h, cache = net.start_features(obs, task, images)  # (B, C)
    bins, chosen = [], []
    for i in range(net.action_dim):
        if i > 0:
            h, cache = net.step_features(bins[-1], i, cache)
        values, allowed = _choice_values(net, h, support_tau)  # (B, K) each
        b = allowed.argmax(dim=-1)  # (B,)
        bins.append(b)
        chosen.append(values.gather(1, b[:, None])[:, 0])
    return torch.stack(bins, dim=1), torch.stack(chosen, dim=1)


class QTPolicy:
    """A trained Q-Transformer as a policy. Load with `QTPolicy.from_checkpoint(path)`."""

    def __init__(
        self,
        net: QTransformerNet,
        discretizer: ActionDiscretizer,
        meta: Optional[dict] = None,
        device="cpu",
        compile: bool = False,
        support_tau: Optional[float] = None,
    ):
        """`compile=True` runs greedy actions through torch.compile: about 2x lower latency at batch 1
        on CPU (docs/benchmarks.md), after a one-off compilation of tens of seconds per batch size. For
        control loops with a fixed batch; exploration (epsilon, temperature) stays eager.

        `support_tau`: decode only among bins whose imitation probability is >= tau x the best bin's
        (networks with an imitation head); None takes the training run's --algo.support-tau."""
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.discretizer = discretizer
        self.meta = meta or {}
        if support_tau is None:
            support_tau = float((self.meta.get("algo") or {}).get("support_tau", 0.0)) if net.imitation_head is not None else 0.0
        if not 0.0 <= support_tau <= 1.0:
            raise ValueError(f"support_tau must be in [0, 1], got {support_tau}")
        if support_tau > 0 and net.imitation_head is None:
            raise ValueError("support_tau > 0 needs a policy trained with an imitation head (--algo.imitation-weight > 0)")
        self.support_tau = support_tau
        self.model_dir: Optional[Path] = None  # set when loaded from a checkpoint (evaluation workers reload it)
        greedy = partial(greedy_decode, self.net, support_tau=support_tau)
        self._greedy = torch.compile(greedy, dynamic=False) if compile else None

    @classmethod
    def from_checkpoint(
        cls, path: Union[str, Path], device: str = "cpu", compile: bool = False, support_tau: Optional[float] = None
    ) -> "QTPolicy":
        from .checkpoint import load_model, resolve_model_dir

        net, discretizer, meta = load_model(path, device=device)
        policy = cls(net, discretizer, meta, device, compile=compile, support_tau=support_tau)
        policy.model_dir = resolve_model_dir(path)
        return policy

    @property
    def env_id(self) -> Optional[str]:
        """The environment id recorded with the model (never one that would import a module: see env_id_from_file)."""
        from .envs import env_id_from_file

        where = self.model_dir / "config.json" if self.model_dir is not None else "the policy's meta"
        return env_id_from_file(self.meta.get("env_id"), where)

    def task_for_env(self, env_id: str, task: Optional[int] = None) -> Optional[int]:
        """The task id to act with in `env_id`: `task` when given; None for a single-task policy; for a
        multi-task policy in "metaworld:<task>", that task's id by name; otherwise an error."""
        names = list(self.meta.get("task_names") or [])
        if task is not None:
            if self.net.task_embedding is None:
                raise ValueError(f"--task {task}: this policy was trained on a single task ({names}), it takes no task id; drop --task")
            if isinstance(task, bool) or not 0 <= int(task) < self.net.num_tasks:
                raise ValueError(f"--task {task}: this policy was trained on {self.net.num_tasks} tasks {names}; pass an id from 0 to {self.net.num_tasks - 1}")
            return task
        if self.net.task_embedding is None:
            return None
        name = env_id.split(":", 1)[1] if env_id.startswith("metaworld:") else None
        if name is None:
            raise ValueError(f"this policy was trained on tasks {names}: pass a task id (--task)")
        if name not in names:
            raise ValueError(f"this policy was trained on tasks {names}, not '{name}'")
        return names.index(name)

    def _inputs(self, obs, task):
        images = None
        if isinstance(obs, dict):
            obs, images = self._split(obs)
            images = images or None  # a Dict observation without cameras (goal-conditioned: observation, desired_goal, ...)
        elif self.net.image_keys:
            raise ValueError(f"this policy reads images {self.net.image_keys}: pass a dict observation with 'state' and those keys")
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        single = obs_t.dim() == 1
        if images is not None:
            single = next(iter(images.values())).dim() == 3
            images = {k: v.unsqueeze(0) if single else v for k, v in images.items()}
            if obs_t.numel() == 0:
                obs_t = obs_t.reshape(next(iter(images.values())).shape[0], 0)
        if single and obs_t.dim() == 1:
            obs_t = obs_t.unsqueeze(0)
        if obs_t.dim() != 2 or obs_t.shape[1] != self.net.obs_dim:
            raise ValueError(f"observation must be ({self.net.obs_dim},) or (batch, {self.net.obs_dim}); got {tuple(obs_t.shape)}")
        task_t = None
        if self.net.task_embedding is not None and task is None:
            names = self.meta.get("task_names")
            raise ValueError(f"this policy was trained on {self.net.num_tasks} tasks ({names}); pass task= with a task id")
        if task is not None:
            task_t = torch.as_tensor(np.asarray(task), device=self.device).long().reshape(-1)
            task_t = task_t.expand(obs_t.shape[0]) if task_t.numel() == 1 else task_t
        return obs_t, task_t, single, images

    def _split(self, obs: dict):
        """A Dict observation, single or batched -> (state (B, obs_dim) or (obs_dim,), {camera: uint8 tensor}).

        Camera keys are the ones the model was trained with; every other entry is flattened into the
        state in sorted key order, as the dataset recorder (envs/rollout.py) does."""
        image_keys = self.net.image_keys
        missing = [k for k in image_keys if k not in obs]
        if missing:
            raise ValueError(f"observation dict lacks the image keys {missing} this policy reads")
        state_keys = sorted(k for k in obs if k not in image_keys)
        ref = np.asarray(obs[image_keys[0]] if image_keys else obs[state_keys[0]])
        single = ref.ndim == (3 if image_keys else 1)
        B = 1 if single else ref.shape[0]
        parts = [np.asarray(obs[k], dtype=np.float32).reshape(B, -1) for k in state_keys]
        state = np.concatenate(parts, axis=1) if parts else np.zeros((B, 0), np.float32)
        images = {k: torch.as_tensor(np.asarray(obs[k], dtype=np.uint8), device=self.device) for k in image_keys}
        return (state[0] if single else state), images

    def act(
        self,
        obs,
        task=None,
        epsilon: float = 0.0,
        temperature: float = 0.0,
        generator: Optional[torch.Generator] = None,
    ) -> np.ndarray:
        """Observation (obs_dim,) or (B, obs_dim) -> action (d,) or (B, d) at bin centres.

        Greedy by default. For data collection: `temperature` samples each dimension's bin from
        softmax(values / temperature), `epsilon` then replaces it by a uniform bin with that probability.
        """
        obs_t, task_t, single, images = self._inputs(obs, task)
        if self._greedy is not None and epsilon == 0 and temperature == 0:
            with torch.inference_mode():
                bins, _ = self._greedy(obs_t, task_t, images)
        else:
            bins, _ = decode(
                self.net, obs_t, task_t, epsilon=epsilon, temperature=temperature, generator=generator, images=images,
                support_tau=self.support_tau,
            )
        actions = self.discretizer.decode(bins)  # (B, d)
        return actions[0] if single else actions

    def q_values(self, obs, task=None) -> np.ndarray:
        """The value of the greedy action, Q(s, a*) in [0, 1]: a success estimate (affordance). () or (B,)."""
        obs_t, task_t, single, images = self._inputs(obs, task)
        _, values = decode(self.net, obs_t, task_t, images=images, support_tau=self.support_tau)
        v = values[:, -1].float().cpu().numpy()  # value at the last dimension = Q of the full action
        return v[0] if single else v
