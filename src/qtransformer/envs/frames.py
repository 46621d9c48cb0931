"""A window of the last W camera frames in every observation, as a frame-history policy reads them.

`FrameWindow(env, frames)` replaces each uint8 (H, W, C) entry of a Dict observation by a stack
(frames, H, W, C) of its last `frames` values, oldest first; after a reset the window is the first
frame repeated (the padding the training sampler uses at an episode's start: data/sampler.py,
`frame_windows`). The state entries pass unchanged. A dataset records single frames: the recorders
keep the newest frame of each window (processor.latest_frames). `QTPolicy.make_env(env_id)` wraps an
environment for a policy trained with --model.frames W > 1.
"""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np


class FrameWindow(gym.ObservationWrapper):
    def __init__(self, env: gym.Env, frames: int):
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict):
            raise ValueError(f"FrameWindow needs Dict observations with camera entries, got {space}")
        self.frames = frames
        self.keys = sorted(k for k, s in space.spaces.items() if isinstance(s, gym.spaces.Box) and s.dtype == np.uint8 and len(s.shape) == 3)
        if not self.keys:
            raise ValueError("FrameWindow: the observations have no camera entries (uint8, rank 3): a frame window needs images")
        spaces = dict(space.spaces)
        for k in self.keys:
            s = spaces[k]
            spaces[k] = gym.spaces.Box(np.repeat(s.low[None], frames, 0), np.repeat(s.high[None], frames, 0), dtype=np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self._windows: dict[str, deque] = {}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._windows = {k: deque([np.asarray(obs[k])] * self.frames, maxlen=self.frames) for k in self.keys}
        return self._stack(obs), info

    def observation(self, obs):
        for k in self.keys:
            self._windows[k].append(np.asarray(obs[k]))
        return self._stack(obs)

    def _stack(self, obs):
        out = dict(obs)
        for k in self.keys:
            out[k] = np.stack(self._windows[k])  # (frames, H, W, C), oldest first
        return out
