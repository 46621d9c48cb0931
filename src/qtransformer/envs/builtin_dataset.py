"""Make the built-in dataset: scripted demonstrations plus noisy autonomous episodes that mostly fail."""

from __future__ import annotations

from typing import Callable

import numpy as np
from tqdm import tqdm

from ..data import EpisodeDataset
from . import BUILTIN_ENV_ID, make_env
from .point_reach import AutonomousPolicy, expert_action


def rollout(env, act: Callable[[np.ndarray], np.ndarray], seed: int) -> dict:
    """One episode as a dict of per-step arrays (the keys of EpisodeDataset.from_episodes)."""
    obs, _ = env.reset(seed=seed)
    steps = {k: [] for k in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts")}
    while True:
        action = act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for k, v in zip(steps, (obs, next_obs, action, reward, terminated, truncated and not terminated)):
            steps[k].append(v)
        obs = next_obs
        if terminated or truncated:
            return {k: np.asarray(v) for k, v in steps.items()}


def make_builtin_dataset(demos: int, autonomous: int, seed: int = 0, expert_noise: float = 0.1, progress: bool = True) -> EpisodeDataset:
    if demos < 0 or autonomous < 0 or demos + autonomous == 0 or seed < 0:
        raise ValueError(f"need demos >= 0, autonomous >= 0 (not both 0) and seed >= 0; got {demos}, {autonomous}, {seed}")
    env = make_env(BUILTIN_ENV_ID)
    rng = np.random.default_rng(seed)
    episodes = []
    plan = [("demonstration", i) for i in range(demos)] + [("autonomous", demos + i) for i in range(autonomous)]
    for source, i in tqdm(plan, desc="episodes", disable=not progress, leave=False):
        if source == "demonstration":
            ep = rollout(env, lambda o: expert_action(o, rng, noise=expert_noise), seed=seed * 1_000_003 + i)
        else:
            ep = rollout(env, AutonomousPolicy(rng), seed=seed * 1_000_003 + i)
        ep["source"] = source
        episodes.append(ep)
    space = env.action_space
    return EpisodeDataset.from_episodes(episodes, space.low, space.high, env_id=BUILTIN_ENV_ID, task_names=["reach"])
