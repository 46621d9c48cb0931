"""The batch the sampler hands to the learner: one frozen dataclass, a shape per field.

B transitions, d action dimensions, a step t and its bootstrap state s_{t+m} (m <= n steps on; see
data/returns.py for the n-step reward, discount and bootstrap flag).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator, Optional, Union

import torch

Images = dict[str, torch.Tensor]  # {camera: (B, H, W, C) uint8}


@dataclass(frozen=True)
class Batch:
    obs: torch.Tensor  # (B, obs_dim) float32, the state at s_t
    bins: torch.Tensor  # (B, d) int64, the data's action bins at s_t
    reward: torch.Tensor  # (B,) float32, the discounted sum of the m <= n rewards from t
    discount: torch.Tensor  # (B,) float32, gamma**m
    bootstrap: torch.Tensor  # (B,) float32, 0 after a terminal, 1 otherwise (a timeout included)
    next_obs: torch.Tensor  # (B, obs_dim) float32, the bootstrap state s_{t+m}
    mc_return: torch.Tensor  # (B,) float32, the data episode's discounted return-to-go from t
    task: Optional[torch.Tensor] = None  # (B,) int64, the task id (None: the network has one task)
    images: Optional[Images] = None  # {camera: (B, H, W, C) uint8} at s_t (image models only)
    next_images: Optional[Images] = None  # {camera: (B, H, W, C) uint8} at s_{t+m} (image models only)
    imitate: Optional[torch.Tensor] = None  # (B,) float32, 1 on the steps the imitation head learns from

    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> Batch:
        """The same batch with every tensor on `device`."""

        def move(x):
            if x is None:
                return None
            if isinstance(x, dict):
                return {k: v.to(device, non_blocking=non_blocking) for k, v in x.items()}
            return x.to(device, non_blocking=non_blocking)

        return Batch(**{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def pin_memory(self) -> Batch:
        """The same batch in page-locked host memory, so that `.to(cuda, non_blocking=True)` copies
        asynchronously (the sampler pins batches bound for a GPU, in its prefetch thread)."""

        def pin(x):
            if x is None:
                return None
            if isinstance(x, dict):
                return {k: v.pin_memory() for k, v in x.items()}
            return x.pin_memory()

        return Batch(**{f.name: pin(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) for every tensor present, images as 'images/<camera>'."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                yield from ((f"{f.name}/{k}", v) for k, v in value.items())
            elif value is not None:
                yield f.name, value


def concat_batches(batches: list[Batch]) -> Batch:
    """One batch holding the rows of `batches` in order: every field concatenated along B (fields that
    are None in one batch must be None in all)."""

    def cat(values):
        if values[0] is None:
            return None
        if isinstance(values[0], dict):
            return {k: torch.cat([v[k] for v in values]) for k in values[0]}
        return torch.cat(values)

    return Batch(**{f.name: cat([getattr(b, f.name) for b in batches]) for f in dataclasses.fields(Batch)})
