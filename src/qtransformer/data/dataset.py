"""Episodes in memory: flat step arrays cut into episodes (data/store.py keeps them on disk, and depends on
this module, never the other way: `EpisodeStore.create(path, ds)` writes one, `EpisodeStore.open(path)` reads it).

See docs/dataset_format.md. Per step: observation, next observation, action, reward, `terminal` (the
episode really ended: no bootstrap) and `timeout` (cut by a time limit: bootstrap). A step with both
set is a terminal. Per episode: source (demonstration, autonomous or a user label) and task id;
success is derived: an episode succeeded when it earned a positive reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

DTYPES = {
    "observations": np.float32, "next_observations": np.float32, "actions": np.float32, "rewards": np.float32,
    "terminals": bool, "timeouts": bool, "episode_starts": np.int64, "episode_task": np.int64,
}
STEP_FIELDS = ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts")


class DatasetError(ValueError):
    """The dataset is malformed; the message names the file, the episode and the field, and the fix."""


@dataclass
class EpisodeDataset:
    observations: np.ndarray  # (N, obs_dim) float32
    next_observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, d) float32
    rewards: np.ndarray  # (N,) float32
    terminals: np.ndarray  # (N,) bool
    timeouts: np.ndarray  # (N,) bool
    episode_starts: np.ndarray  # (E+1,) int64
    episode_task: np.ndarray  # (E,) int64
    episode_source: list[str]
    action_low: np.ndarray  # (d,)
    action_high: np.ndarray  # (d,)
    task_names: list[str] = field(default_factory=lambda: ["default"])
    env_id: Optional[str] = None
    source_path: str = "<memory>"
    images: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (N, H, W, C) uint8, the image at each step
    final_images: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (E, H, W, C) uint8, after each episode's last step
    episode_instruction: list[str] = field(default_factory=list)  # E instruction texts ("open the drawer"), or empty

    @property
    def image_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(int(x) for x in v.shape[1:]) for k, v in sorted(self.images.items())}

    def next_image_rows(self) -> np.ndarray:
        """(N,) for each step, the row of its next image in concat(images, final_images) of one key."""
        N = self.num_steps
        rows = np.arange(1, N + 1)
        last = self.episode_starts[1:] - 1
        rows[last] = N + np.arange(self.num_episodes)
        return rows

    # -- shape facts --------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts) - 1

    @property
    def num_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def episode_success(self) -> np.ndarray:
        """(E,) bool: an episode succeeded when it earned a positive reward."""
        return np.maximum.reduceat(self.rewards, self.episode_starts[:-1]) > 0 if self.num_steps else np.zeros(0, bool)

    def step_task(self) -> np.ndarray:
        return np.repeat(self.episode_task, np.diff(self.episode_starts)).astype(np.int64)

    def success_by_source(self) -> dict[str, tuple[int, float]]:
        """{source: (episodes, success rate)}."""
        success = self.episode_success()
        sources = np.asarray(self.episode_source)
        out = {}
        for s in sorted(set(self.episode_source)):
            sel = sources == s
            out[s] = (int(sel.sum()), float(success[sel].mean()))
        return out

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def from_episodes(cls, episodes: list[dict], action_low, action_high, **kwargs) -> "EpisodeDataset":
        """Episodes as dicts of per-step arrays (keys STEP_FIELDS) plus 'source', optional 'task' and 'instruction';
        image observations as 'images' {key: (T, H, W, C) uint8} and 'final_images' {key: (H, W, C)}."""
        if not episodes:
            raise DatasetError("no episodes given: a dataset needs at least one episode")
        lengths = [len(ep["rewards"]) for ep in episodes]
        arrays = {k: np.concatenate([np.asarray(ep[k]) for ep in episodes]) for k in STEP_FIELDS}
        ds = cls(
            observations=arrays["observations"].astype(np.float32),
            next_observations=arrays["next_observations"].astype(np.float32),
            actions=arrays["actions"].astype(np.float32),
            rewards=arrays["rewards"].astype(np.float32),
            terminals=arrays["terminals"].astype(bool),
            timeouts=arrays["timeouts"].astype(bool),
            episode_starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            episode_task=np.asarray([ep.get("task", 0) for ep in episodes], dtype=np.int64),
            episode_source=[str(ep["source"]) for ep in episodes],
            action_low=np.asarray(action_low, dtype=np.float32),
            action_high=np.asarray(action_high, dtype=np.float32),
            episode_instruction=[str(ep["instruction"]) for ep in episodes] if "instruction" in episodes[0] else [],
            images={k: np.concatenate([np.asarray(ep["images"][k]) for ep in episodes]) for k in episodes[0].get("images", {})},
            final_images={k: np.stack([np.asarray(ep["final_images"][k]) for ep in episodes]) for k in episodes[0].get("final_images", {})},
            **kwargs,
        )
        ds.validate()
        return ds

    @classmethod
    def concatenate(cls, parts: list["EpisodeDataset"], source_path: str = "<memory>") -> "EpisodeDataset":
        """The episodes of `parts` in order as one dataset in memory, fully validated. The parts share the
        action bounds, task names, environment id and cameras of the first (an EpisodeStore's chunks do)."""
        if not parts:
            raise DatasetError(f"{source_path}: nothing to concatenate; a dataset needs at least one episode")
        first = parts[0]
        offsets = np.cumsum([0] + [c.num_steps for c in parts])
        ds = cls(
            **{k: np.concatenate([np.asarray(getattr(c, k)) for c in parts]) for k in STEP_FIELDS},
            episode_starts=np.concatenate([[0]] + [c.episode_starts[1:] + o for c, o in zip(parts, offsets, strict=False)]).astype(np.int64),  # offsets: one more (the total)
            episode_task=np.concatenate([c.episode_task for c in parts]),
            episode_source=[s for c in parts for s in c.episode_source],
            episode_instruction=[i for c in parts for i in c.episode_instruction] if all(c.episode_instruction for c in parts) else [],
            action_low=first.action_low,
            action_high=first.action_high,
            task_names=list(first.task_names),
            env_id=first.env_id,
            source_path=source_path,
            images={k: np.concatenate([np.asarray(c.images[k]) for c in parts]) for k in first.images},
            final_images={k: np.concatenate([np.asarray(c.final_images[k]) for c in parts]) for k in first.images},
        )
        ds.validate()
        return ds

    # -- checks -------------------------------------------------------------------------------
    def validate(self, values: bool = True) -> None:
        """Check shapes, offsets and end flags; with `values`, also every value (finite, in bounds)."""
        where = self.source_path
        N, E = self.num_steps, self.num_episodes

        def fail(msg: str) -> None:
            raise DatasetError(f"{where}: {msg}")

        if E < 1:
            fail("field 'episode_starts': the dataset holds no episode; make or import some episodes")
        for name in STEP_FIELDS:
            arr = getattr(self, name)
            if arr.shape[0] != N:
                fail(f"field '{name}' has {arr.shape[0]} steps but 'rewards' has {N}; every step field needs one row per step")
        for name in ("rewards", "terminals", "timeouts"):
            if getattr(self, name).ndim != 1:
                fail(f"field '{name}' must be one value per step, got shape {getattr(self, name).shape}")
        if self.episode_instruction and len(self.episode_instruction) != E:
            fail(f"field 'episode_instruction': {len(self.episode_instruction)} entries for {E} episodes; give one per episode or none")
        if sorted(self.images) != sorted(self.final_images):
            fail(f"fields 'images'/'final_images' need the same keys, got {sorted(self.images)} and {sorted(self.final_images)}")
        for key, img in self.images.items():
            final = self.final_images[key]
            if img.dtype != np.uint8 or final.dtype != np.uint8:
                fail(f"field 'images/{key}': dtype {img.dtype}/{final.dtype}, images must be uint8 (0-255); convert them")
            if img.ndim != 4 or img.shape[0] != N:
                fail(f"field 'images/{key}': shape {img.shape}, expected (steps={N}, H, W, C)")
            if final.shape != (E, *img.shape[1:]):
                fail(f"field 'final_images/{key}': shape {final.shape}, expected (episodes={E}, {', '.join(map(str, img.shape[1:]))})")
        if self.observations.ndim != 2 or self.next_observations.shape != self.observations.shape:
            fail("fields 'observations' and 'next_observations' must both be (steps, obs_dim) arrays")
        if self.actions.ndim != 2:
            fail(f"field 'actions' must be (steps, action_dim), got shape {self.actions.shape}")
        starts = self.episode_starts
        if starts[0] != 0 or starts[-1] != N or np.any(np.diff(starts) <= 0):
            lengths = np.diff(starts)
            bad = int(np.argmax(lengths <= 0)) if np.any(lengths <= 0) else -1
            detail = f"episode {bad} is empty" if bad >= 0 else f"offsets must run from 0 to {N}"
            fail(f"field 'episode_starts': {detail}; drop empty episodes")
        if len(self.episode_source) != E or self.episode_task.shape[0] != E:
            fail(f"per-episode fields 'episode_source'/'episode_task' need {E} entries")
        if np.any((self.episode_task < 0) | (self.episode_task >= self.num_tasks)):
            e = int(np.argmax((self.episode_task < 0) | (self.episode_task >= self.num_tasks)))
            fail(f"episode {e}, field 'episode_task': task id {self.episode_task[e]} is not among the {self.num_tasks} task_names")
        step_episode = np.repeat(np.arange(E), np.diff(starts))
        for name in ("observations", "next_observations", "actions", "rewards") if values else ():
            arr = getattr(self, name)
            finite = np.isfinite(arr.reshape(N, -1)).all(axis=1)
            if not finite.all():
                t = int(np.argmin(finite))
                fail(f"episode {step_episode[t]}, step {t - starts[step_episode[t]]}, field '{name}': NaN or inf; clean or drop that episode")
        bad_reward = ((self.rewards < 0) | (self.rewards > 1)) if values else np.zeros(0, bool)
        if bad_reward.any():
            t = int(np.argmax(bad_reward))
            fail(
                f"episode {step_episode[t]}, step {t - starts[step_episode[t]]}, field 'rewards': {self.rewards[t]} is outside [0, 1]; "
                "Q-Transformer's sigmoid head assumes sparse rewards in [0, 1] (1 on success): rescale them"
            )
        if self.action_low.shape != (self.action_dim,) or self.action_high.shape != (self.action_dim,):
            fail(f"'action_low'/'action_high' must have {self.action_dim} entries, one per action dimension")
        if not (np.isfinite(self.action_low).all() and np.isfinite(self.action_high).all()) or np.any(self.action_high <= self.action_low):
            fail(
                f"'action_low'/'action_high' must be finite with high > low in every dimension, got "
                f"[{self.action_low.tolist()}, {self.action_high.tolist()}]; a dimension the data never moves still needs a range"
            )
        tol = 1e-5 * np.maximum(1.0, self.action_high - self.action_low)
        outside = ((self.actions < self.action_low - tol) | (self.actions > self.action_high + tol)).any(axis=1) if values else np.zeros(0, bool)
        if outside.any():
            t = int(np.argmax(outside))
            fail(
                f"episode {step_episode[t]}, step {t - starts[step_episode[t]]}, field 'actions': {self.actions[t].tolist()} "
                f"lies outside the declared bounds [{self.action_low.tolist()}, {self.action_high.tolist()}]; "
                "widen the bounds or clip the actions"
            )
        last = starts[1:] - 1
        ends = self.terminals[last] | self.timeouts[last]
        if not ends.all():
            e = int(np.argmin(ends))
            fail(f"episode {e}, field 'terminals'/'timeouts': its last step is neither; mark it a timeout if the episode was cut short")
        inner = np.ones(N, bool)
        inner[last] = False
        if (self.terminals & inner).any() or (self.timeouts & inner).any():
            t = int(np.argmax((self.terminals | self.timeouts) & inner))
            fail(f"episode {step_episode[t]}, step {t - starts[step_episode[t]]}, field 'terminals'/'timeouts': set before the episode's last step; split the episode there")
