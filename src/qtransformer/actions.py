"""Per-dimension uniform discretisation of continuous actions.

Dimension j is split into K equal bins between low[j] and high[j]. Bin k covers
[low + k*w, low + (k+1)*w) with w = (high - low) / K; it decodes to its centre low + (k + 0.5)*w.
Actions outside the bounds clip to the edge bins.
"""

from __future__ import annotations

import numpy as np
import torch


class ActionDiscretizer:
    def __init__(self, low, high, num_bins: int):
        low = np.asarray(low, dtype=np.float64).reshape(-1)
        high = np.asarray(high, dtype=np.float64).reshape(-1)
        if low.shape != high.shape:
            raise ValueError(f"action bounds disagree in shape: low {low.shape}, high {high.shape}")
        if not np.all(np.isfinite(low)) or not np.all(np.isfinite(high)):
            raise ValueError("action bounds must be finite to be discretised; give explicit bounds")
        if np.any(high <= low):
            bad = np.nonzero(high <= low)[0].tolist()
            raise ValueError(f"action bounds need high > low in every dimension; not so in dimensions {bad}")
        if num_bins < 2:
            raise ValueError(f"num_bins must be at least 2, got {num_bins}")
        self.low = low
        self.high = high
        self.num_bins = int(num_bins)

    @property
    def action_dim(self) -> int:
        return self.low.shape[0]

    @property
    def bin_width(self) -> np.ndarray:
        return (self.high - self.low) / self.num_bins

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """(..., d) float actions -> (..., d) int64 bin ids in [0, K-1]."""
        actions = np.asarray(actions, dtype=np.float64)
        scaled = (actions - self.low) / (self.high - self.low) * self.num_bins  # (..., d) in [0, K]
        return np.clip(np.floor(scaled), 0, self.num_bins - 1).astype(np.int64)

    def decode(self, bins) -> np.ndarray:
        """(..., d) bin ids -> (..., d) float32 bin centres."""
        if isinstance(bins, torch.Tensor):
            bins = bins.detach().cpu().numpy()
        bins = np.asarray(bins, dtype=np.float64)
        return (self.low + (bins + 0.5) * self.bin_width).astype(np.float32)

    def centres(self) -> np.ndarray:
        """(d, K) the centre of every bin."""
        return self.decode(np.broadcast_to(np.arange(self.num_bins)[:, None], (self.num_bins, self.action_dim))).T

    def to_dict(self) -> dict:
        return {"low": self.low.tolist(), "high": self.high.tolist(), "num_bins": self.num_bins}

    @classmethod
    def from_dict(cls, d: dict) -> "ActionDiscretizer":
        return cls(d["low"], d["high"], d["num_bins"])
