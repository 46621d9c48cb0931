"""Run a policy in a gymnasium environment and record the episode in the dataset's layout.

Observations are split into the stored state row and camera images by processor.split_observation, the
rule a policy's processor applies when it acts, so a dataset holds exactly what the model later reads."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..processor import split_observation  # the recorder's rule is the processor's (processor.py)


def rollout(env, act: Callable, seed: int) -> dict:
    """One episode as a dict of per-step arrays (the keys of EpisodeDataset.from_episodes)."""
    obs, _ = env.reset(seed=seed)
    seen = [split_observation(obs)]
    steps = {k: [] for k in ("actions", "rewards", "terminals", "timeouts")}
    while True:
        action = act(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        seen.append(split_observation(obs))
        for k, v in zip(steps, (action, reward, terminated, truncated and not terminated), strict=True):
            steps[k].append(v)
        if terminated or truncated:
            episode = {k: np.asarray(v) for k, v in steps.items()}
            states = np.stack([s for s, _ in seen])  # (T+1, obs_dim)
            episode["observations"], episode["next_observations"] = states[:-1], states[1:]
            keys = seen[0][1]
            episode["images"] = {k: np.stack([im[k] for _, im in seen[:-1]]) for k in keys}  # (T, H, W, C)
            episode["final_images"] = {k: seen[-1][1][k] for k in keys}  # (H, W, C)
            return episode
