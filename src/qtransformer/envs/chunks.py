"""Action chunks: one policy decision covers h consecutive environment steps (Q-chunking, Li et al. 2025).

A policy trained with --algo.action-chunk h outputs h x d numbers per decision: the actions of h steps,
step-major (a_t, a_{t+1}, ..., a_{t+h-1}). `ActionChunk(env, h)` runs them open-loop: it steps the
environment with each in turn and stops early when the episode ends. The wrapped step returns the last
observation, the sum of the rewards, the last termination and truncation flags, and the last info with
`success` true when any of the inner steps succeeded (evaluation counts success at any step), and
`env_steps`, the number of inner steps run (evaluation counts episode lengths in environment steps).
`QTPolicy.make_env(env_id)` wraps environments this way for such a policy.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class ActionChunk(gym.Wrapper):
    def __init__(self, env: gym.Env, h: int):
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"ActionChunk needs a flat Box action space, got {space}")
        if h < 1:
            raise ValueError(f"ActionChunk: the chunk must be >= 1 step, got {h}")
        self.h = int(h)
        self.d = int(space.shape[0])
        self.action_space = gym.spaces.Box(np.tile(space.low, h), np.tile(space.high, h), dtype=space.dtype)

    def step(self, action):
        chunk = np.asarray(action).reshape(self.h, self.d)  # (h, d): one row per environment step
        total, succeeded, steps = 0.0, False, 0
        for a in chunk:
            obs, reward, terminated, truncated, info = self.env.step(a)
            steps += 1
            total += float(reward)
            succeeded = succeeded or bool(info.get("success", info.get("is_success", False)))
            if terminated or truncated:
                break
        info = dict(info)
        if succeeded or "success" in info:
            info["success"] = succeeded
        info["env_steps"] = steps
        return obs, total, terminated, truncated, info
