"""Returns-to-go and n-step quantities over a flat array of steps cut into episodes.

Episodes are given by `starts` (E+1,), offsets into the flat arrays: episode e is steps
starts[e] .. starts[e+1]-1. Nothing crosses an episode boundary.
"""

from __future__ import annotations

import numpy as np


def episode_ends(starts: np.ndarray) -> np.ndarray:
    """(N,) for every step, the index one past the last step of its episode."""
    lengths = np.diff(starts)
    return np.repeat(starts[1:], lengths)


def returns_to_go(rewards: np.ndarray, starts: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_{k >= 0} gamma^k r_{t+k} up to the episode's end. (N,) float32.

    Vectorised across episodes: steps are grouped by their distance to their episode's last step, and
    G_t = r_t + gamma * G_{t+1} is applied to one whole group at a time (as many numpy operations as the
    longest episode has steps, each over all episodes at once).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    N = rewards.shape[0]
    out = rewards.copy()
    if N == 0:
        return out.astype(np.float32)
    to_end = episode_ends(starts) - 1 - np.arange(N)  # 0 on each episode's last step
    order = np.argsort(to_end, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(to_end))])
    for k in range(1, len(bounds) - 1):
        t = order[bounds[k] : bounds[k + 1]]  # every step k steps before its episode's end
        out[t] = rewards[t] + gamma * out[t + 1]
    return out.astype(np.float32)


def n_step_returns(
    rewards: np.ndarray, terminals: np.ndarray, starts: np.ndarray, gamma: float, n: int
) -> dict[str, np.ndarray]:
    """n-step quantities for every step t, with m = min(n, steps left in the episode):

    reward    = sum_{k < m} gamma^k r_{t+k}
    discount  = gamma^m
    next_index = t + m - 1: the step whose next observation is s_{t+m}, the bootstrap state
    bootstrap = 0 if the step at next_index is a terminal (no value after it), else 1 (timeouts included)
    """
    if n < 1:
        raise ValueError(f"n_step must be >= 1, got {n}")
    rewards = np.asarray(rewards, dtype=np.float64)
    N = rewards.shape[0]
    t = np.arange(N)
    m = np.minimum(n, episode_ends(starts) - t)  # (N,) >= 1
    total = np.zeros(N)
    for k in range(n):
        inside = k < m
        total[inside] += gamma**k * rewards[t[inside] + k]
    next_index = t + m - 1
    return {
        "reward": total.astype(np.float32),
        "discount": (gamma ** m.astype(np.float64)).astype(np.float32),
        "next_index": next_index.astype(np.int64),
        "bootstrap": (~np.asarray(terminals, dtype=bool)[next_index]).astype(np.float32),
    }


def chunk_steps(starts: np.ndarray, h: int) -> np.ndarray:
    """(N, h) for every step t, the steps of the action chunk that starts there: t, t+1, ..., t+h-1,
    each clipped to t's episode's last step (a chunk that runs past its episode's end repeats the last
    action; the backup over it stops at the end: n_step_returns with n = h). h = 1 gives (N, 1) = t."""
    if h < 1:
        raise ValueError(f"action chunk must be >= 1, got {h}")
    N = int(starts[-1])
    t = np.arange(N)
    last = episode_ends(starts) - 1  # (N,) each step's episode's last step
    return np.minimum(t[:, None] + np.arange(h)[None, :], last[:, None]).astype(np.int64)


def chunk_actions(actions: np.ndarray, starts: np.ndarray, h: int) -> np.ndarray:
    """(N, d) actions -> (N, h x d): step t's action chunk a_t .. a_{t+h-1}, step-major, clipped to t's
    episode as chunk_steps does. h = 1 returns `actions` itself (no copy)."""
    if h == 1:
        return actions
    return actions[chunk_steps(starts, h)].reshape(len(actions), -1)  # (N, h, d) -> (N, h*d)
