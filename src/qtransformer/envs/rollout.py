"""Run a policy in a gymnasium environment and record the episode in the dataset's layout.

Observations are split into the stored state row and camera images by processor.split_observation, the
rule a policy's processor applies when it acts, so a dataset holds exactly what the model later reads.
`EpisodeRecorder` records one episode step by step (the fine-tuning actors step several environments
side by side with it); `rollout` runs one whole episode with it."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..processor import latest_frames, split_observation  # the recorder's rule is the processor's (processor.py)


class EpisodeRecorder:
    """One episode in the making: made with the observation after a reset, `add(...)` after every env.step, and
    `episode()` once it ended (a dict of per-step arrays: the keys of EpisodeDataset.from_episodes).
    Observations from envs.FrameWindow (frames > 1) are recorded by their newest frame."""

    def __init__(self, obs, frames: int = 1):
        self.frames = frames
        self.seen = [self._split(obs)]
        self.steps: dict[str, list] = {k: [] for k in ("actions", "rewards", "terminals", "timeouts")}

    def _split(self, obs):
        return split_observation(latest_frames(obs) if self.frames > 1 else obs)

    def __len__(self) -> int:
        return len(self.steps["rewards"])

    def add(self, action, obs, reward, terminated: bool, truncated: bool) -> None:
        self.seen.append(self._split(obs))
        for k, v in zip(self.steps, (action, reward, terminated, truncated and not terminated), strict=True):
            self.steps[k].append(v)

    def episode(self) -> dict:
        episode = {k: np.asarray(v) for k, v in self.steps.items()}
        states = np.stack([s for s, _ in self.seen])  # (T+1, obs_dim)
        episode["observations"], episode["next_observations"] = states[:-1], states[1:]
        keys = self.seen[0][1]
        episode["images"] = {k: np.stack([im[k] for _, im in self.seen[:-1]]) for k in keys}  # (T, H, W, C)
        episode["final_images"] = {k: self.seen[-1][1][k] for k in keys}  # (H, W, C)
        return episode


def rollout(env, act: Callable, seed: int, frames: int = 1) -> dict:
    """One episode as a dict of per-step arrays (the keys of EpisodeDataset.from_episodes); `frames` > 1:
    `env` is an envs.FrameWindow, and the newest frame of each window is recorded."""
    obs, _ = env.reset(seed=seed)
    recorder = EpisodeRecorder(obs, frames)
    while True:
        action = act(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        recorder.add(action, obs, reward, terminated, truncated)
        if terminated or truncated:
            return recorder.episode()
