"""Make the built-in dataset: scripted demonstrations plus noisy autonomous episodes that mostly fail."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from ..data import EpisodeDataset
from . import BUILTIN_ENV_ID, BUILTIN_IMAGE_ENV_ID, make_env
from .point_reach import AutonomousPolicy, expert_action
from .rollout import rollout


def make_builtin_dataset(
    demos: int, autonomous: int, seed: int = 0, expert_noise: float = 0.1, progress: bool = True, images: bool = False
) -> EpisodeDataset:
    """`images`: use the camera variant (qtransformer/PointReach3DImage-v0): 32x32x3 images beside the state."""
    if demos < 0 or autonomous < 0 or demos + autonomous == 0 or seed < 0:
        raise ValueError(f"need demos >= 0, autonomous >= 0 (not both 0) and seed >= 0; got {demos}, {autonomous}, {seed}")
    env_id = BUILTIN_IMAGE_ENV_ID if images else BUILTIN_ENV_ID
    env = make_env(env_id)
    rng = np.random.default_rng(seed)
    episodes = []
    plan = [("demonstration", i) for i in range(demos)] + [("autonomous", demos + i) for i in range(autonomous)]
    for source, i in tqdm(plan, desc="episodes", disable=not progress, leave=False):
        if source == "demonstration":
            ep = rollout(env, lambda o: expert_action(o, rng, noise=expert_noise), seed=seed * 1_000_003 + i)
        else:
            ep = rollout(env, AutonomousPolicy(rng), seed=seed * 1_000_003 + i)
        ep["source"] = source
        ep["instruction"] = "move the point into the goal region"
        episodes.append(ep)
    space = env.action_space
    return EpisodeDataset.from_episodes(episodes, space.low, space.high, env_id=env_id, task_names=["reach"])
