"""Run a policy in a gymnasium environment and record the episode in the dataset's layout."""

from __future__ import annotations

from typing import Callable

import numpy as np


def split_observation(obs) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """An observation -> (state vector, {camera: uint8 image}). A Dict observation's uint8 arrays of
    rank 3 are images; its other entries are flattened into the state in sorted key order."""
    if not isinstance(obs, dict):
        return np.asarray(obs, dtype=np.float32).reshape(-1), {}
    state, images = [], {}
    for k in sorted(obs):
        v = np.asarray(obs[k])
        if v.dtype == np.uint8 and v.ndim == 3:
            images[k] = v
        else:
            state.append(v.astype(np.float32).reshape(-1))
    return (np.concatenate(state) if state else np.zeros(0, np.float32)), images


def rollout(env, act: Callable, seed: int) -> dict:
    """One episode as a dict of per-step arrays (the keys of EpisodeDataset.from_episodes)."""
    obs, _ = env.reset(seed=seed)
    seen = [split_observation(obs)]
    steps = {k: [] for k in ("actions", "rewards", "terminals", "timeouts")}
    while True:
        action = act(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        seen.append(split_observation(obs))
        for k, v in zip(steps, (action, reward, terminated, truncated and not terminated)):
            steps[k].append(v)
        if terminated or truncated:
            episode = {k: np.asarray(v) for k, v in steps.items()}
            states = np.stack([s for s, _ in seen])  # (T+1, obs_dim)
            episode["observations"], episode["next_observations"] = states[:-1], states[1:]
            keys = seen[0][1]
            episode["images"] = {k: np.stack([im[k] for _, im in seen[:-1]]) for k in keys}  # (T, H, W, C)
            episode["final_images"] = {k: seen[-1][1][k] for k in keys}  # (H, W, C)
            return episode
