"""Training transitions (with targets' data-side quantities precomputed) and a uniform sampler."""

from __future__ import annotations

import numpy as np
import torch

from ..actions import ActionDiscretizer
from .dataset import EpisodeDataset
from .returns import n_step_returns, returns_to_go


def build_transitions(ds: EpisodeDataset, discretizer: ActionDiscretizer, gamma: float, n_step: int) -> dict[str, np.ndarray]:
    """Per step: obs, bins, n-step reward/discount/bootstrap, next_index, mc_return, task."""
    terminals = ds.terminals  # a step both terminal and timeout counts as terminal
    nstep = n_step_returns(ds.rewards, terminals, ds.episode_starts, gamma, n_step)
    return {
        "obs": ds.observations.astype(np.float32),
        "bins": discretizer.encode(ds.actions),
        "reward": nstep["reward"],
        "discount": nstep["discount"],
        "bootstrap": nstep["bootstrap"],
        "next_index": nstep["next_index"],
        "mc_return": returns_to_go(ds.rewards, ds.episode_starts, gamma),
        "task": ds.step_task(),
        "next_observations": ds.next_observations.astype(np.float32),
    }


class TransitionSampler:
    """Uniform sampling with replacement, driven by its own torch.Generator (saved for exact resume)."""

    def __init__(self, transitions: dict[str, np.ndarray], batch_size: int, device: torch.device, seed: int):
        self.device = torch.device(device)
        self.data = {k: torch.as_tensor(v).to(self.device) for k, v in transitions.items()}
        self.size = self.data["reward"].shape[0]
        self.batch_size = batch_size
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    def sample(self) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.size, (self.batch_size,), generator=self.generator).to(self.device)  # (B,)
        batch = {k: self.data[k][idx] for k in ("obs", "bins", "reward", "discount", "bootstrap", "mc_return", "task")}
        batch["next_obs"] = self.data["next_observations"][self.data["next_index"][idx]]  # (B, obs_dim)
        return batch
