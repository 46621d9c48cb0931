"""PointReach3D: the built-in task. Needs nothing beyond gymnasium and numpy.

A point moves in the cube [-1, 1]^3 by bounded steps (each coordinate by at most `max_move` per step,
actions in [-1, 1]^3). Observation: (position, goal), 6 floats. Reward 1 and the episode ends
(terminated) when the point is within `goal_radius` of the goal; else reward 0, and the episode is cut
(truncated, a timeout) after `max_steps` steps. Success therefore needs several well-aimed steps in
all three action dimensions.

Two scripted behaviours make a dataset like the paper's: `expert_action` (a demonstrator: heads for
the goal, with a little noise) and `AutonomousPolicy` (an earlier, poor policy: the expert's intent
corrupted by a per-episode bias and large per-step noise, which mostly fails).
"""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np


class PointReach3DEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, max_steps: int = 30, max_move: float = 0.15, goal_radius: float = 0.15, render_mode: Optional[str] = None):
        self.render_mode = render_mode
        self.max_steps, self.max_move, self.goal_radius = max_steps, max_move, goal_radius
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(6,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        self._pos = np.zeros(3)
        self._goal = np.zeros(3)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._pos, self._goal]).astype(np.float32)

    def draw(self, size: int) -> np.ndarray:
        """A top-down (size, size, 3) uint8 picture: the point in red, the goal in green, brighter when higher."""
        img = np.zeros((size, size, 3), np.uint8)
        r = max(size // 32, 1)
        for channel, p in ((0, self._pos), (1, self._goal)):
            col, row = ((p[:2] + 1.0) / 2.0 * (size - 1)).round().astype(int)
            img[max(row - r, 0) : row + r + 1, max(col - r, 0) : col + r + 1, channel] = int(90 + 82 * (p[2] + 1.0))
        return img

    def render(self):
        return self.draw(128) if self.render_mode == "rgb_array" else None

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        while True:  # start and goal at least 0.8 apart, so no episode is solved in one step
            self._pos = self.np_random.uniform(-0.9, 0.9, size=3)
            self._goal = self.np_random.uniform(-0.9, 0.9, size=3)
            if np.linalg.norm(self._pos - self._goal) > 0.8:
                break
        self._t = 0
        return self._obs(), {"success": False}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(3), -1.0, 1.0)
        self._pos = np.clip(self._pos + self.max_move * a, -1.0, 1.0)
        self._t += 1
        success = bool(np.linalg.norm(self._pos - self._goal) < self.goal_radius)
        truncated = (not success) and self._t >= self.max_steps
        return self._obs(), float(success), success, truncated, {"success": success}


class PointReach3DImageEnv(PointReach3DEnv):
    """PointReach3D with a camera: observations {"state": the 6 floats, "image": (32, 32, 3) uint8}.

    The image looks down the z axis: the point is a red square, the goal a green one, each drawn with
    brightness growing with its height z. It exists to exercise image observations end to end."""

    SIZE = 32

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.observation_space = gym.spaces.Dict({
            "state": gym.spaces.Box(-1.0, 1.0, shape=(6,), dtype=np.float32),
            "image": gym.spaces.Box(0, 255, shape=(self.SIZE, self.SIZE, 3), dtype=np.uint8),
        })

    def _obs(self):
        return {"state": super()._obs(), "image": self.draw(self.SIZE)}


def expert_action(obs: np.ndarray, rng: np.random.Generator, noise: float = 0.1, max_move: float = 0.15) -> np.ndarray:
    """Demonstrator: step straight at the goal (saturating at the action bound), plus Gaussian noise."""
    if isinstance(obs, dict):
        obs = obs["state"]
    pos, goal = obs[..., :3], obs[..., 3:6]
    a = np.clip((goal - pos) / max_move, -1.0, 1.0)
    return np.clip(a + noise * rng.standard_normal(a.shape), -1.0, 1.0).astype(np.float32)


class AutonomousPolicy:
    """A poor earlier policy: the expert's intent plus a per-episode bias and large per-step noise."""

    def __init__(self, rng: np.random.Generator, bias_scale: float = 1.5, noise: float = 1.0):
        self.rng = rng
        self.bias = bias_scale * rng.standard_normal(3)
        self.noise = noise

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        a = expert_action(obs, self.rng, noise=0.0) + self.bias + self.noise * self.rng.standard_normal(3)
        return np.clip(a, -1.0, 1.0).astype(np.float32)
