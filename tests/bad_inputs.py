"""A corpus of bad inputs, written into a test's tmp_path (nothing binary is committed).

Each function writes one damaged or crafted dataset, config file or checkpoint and returns its path, so
that every test (and future code) meets the same cases: the reliability defects of issue 16. The good
inputs they start from are tiny: `good_dataset` is a few short episodes of a 3-dimensional state and
2-dimensional actions in [-1, 1].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from qtransformer.data import EpisodeDataset, EpisodeStore


def episodes(n: int = 4, seed: int = 0, length: int = 6, obs_dim: int = 3, d: int = 2) -> list[dict]:
    """`n` short episodes; every other one succeeds (reward 1 at its terminal last step)."""
    rng = np.random.default_rng(seed)
    out = []
    for e in range(n):
        T = length + e % 3
        obs = rng.standard_normal((T + 1, obs_dim)).astype(np.float32)
        success = e % 2 == 0
        out.append({
            "observations": obs[:-1], "next_observations": obs[1:],
            "actions": rng.uniform(-1, 1, (T, d)).astype(np.float32),
            "rewards": np.eye(T, dtype=np.float32)[-1] * success,
            "terminals": np.eye(T, dtype=bool)[-1] * success, "timeouts": np.eye(T, dtype=bool)[-1] * (not success),
            "source": "demonstration" if e % 2 == 0 else "autonomous", "task": 0,
        })
    return out


def good_episodes(n: int = 4, seed: int = 0, env_id: str = "qtransformer/PointReach3D-v0", **kw) -> EpisodeDataset:
    return EpisodeDataset.from_episodes(episodes(n, seed, **kw), [-1, -1], [1, 1], env_id=env_id, task_names=["reach"])


def good_dataset(tmp_path: Path, name: str = "ds", **kw) -> Path:
    path = Path(tmp_path) / name
    EpisodeStore.create(path, good_episodes(**kw))
    return path


def _edit_meta(path: Path, **fields: Any) -> Path:
    meta = json.loads((path / "meta.json").read_text())
    meta.update(fields)
    (path / "meta.json").write_text(json.dumps(meta))
    return path


# -- values in chunk files ------------------------------------------------------------------------------
def chunk_value(tmp_path: Path, field: str, row: int, value, name: str = "ds") -> Path:
    """A dataset whose chunk file `field`.npy holds `value` at step row `row` (written over the file)."""
    path = good_dataset(tmp_path, name)
    f = path / "chunks" / "000000" / f"{field}.npy"
    arr = np.load(f)
    arr[row] = value
    np.save(f, arr)
    return path


# -- meta.json ----------------------------------------------------------------------------------------
def meta_fields(tmp_path: Path, name: str = "ds", **fields: Any) -> Path:
    """A dataset whose meta.json has `fields` replaced (e.g. chunks=["000000", "000000"], action_low="abc")."""
    return _edit_meta(good_dataset(tmp_path, name), **fields)


def chunks_outside(tmp_path: Path) -> tuple[Path, Path]:
    """Two datasets, the first listing the second's chunk through '../' (returns (first, second))."""
    other = good_dataset(tmp_path, "other", seed=1)
    first = good_dataset(tmp_path, "ds")
    _edit_meta(first, chunks=["../../other/chunks/000000"])
    return first, other


def meta_not_utf8(tmp_path: Path) -> Path:
    path = good_dataset(tmp_path)
    (path / "meta.json").write_bytes(b'{"format_version": 2, "env_id": "\xff\xfe"}')
    return path


def meta_is_folder(tmp_path: Path) -> Path:
    path = good_dataset(tmp_path)
    (path / "meta.json").unlink()
    (path / "meta.json").mkdir()
    return path


def deeply_nested_json(path: Path, depth: int = 100_000) -> Path:
    path.write_text('{"model": ' * 1 + "[" * depth + "]" * depth + "}")
    return path


# -- checkpoints --------------------------------------------------------------------------------------
def model_config_fields(run: Path, **fields: Any) -> Path:
    """Edit the model/config.json of the checkpoint `last` points at (e.g. env_id="this:Foo-v0", model=5)."""
    ckpt = run / "checkpoints" / (run / "checkpoints" / "last").read_text().strip()
    path = ckpt / "model" / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(fields)
    path.write_text(json.dumps(cfg))
    return path


def last_pointer(run: Path, text: str) -> Path:
    (run / "checkpoints" / "last").write_text(text + "\n")
    return run


def module_env_id(tmp_path: Path, module: str = "qt_evil_module") -> tuple[str, Path]:
    """An env id 'module:Foo-v0' and a module file that, once imported, writes a marker file (returned)."""
    marker = Path(tmp_path) / "imported.txt"
    (Path(tmp_path) / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    return f"{module}:Foo-v0", marker


# -- environments -------------------------------------------------------------------------------------
DICT_GOAL_ENV_ID = "qtest/DictGoal-v0"


def register_dict_goal_env() -> str:
    """A tiny goal-conditioned environment whose Dict observation holds no image (observation,
    achieved_goal, desired_goal, as gymnasium-robotics' environments): 5 steps, reward 1 when the
    first action dimension is positive at the last step."""
    import gymnasium as gym

    class DictGoalEnv(gym.Env):
        def __init__(self):
            box = lambda n: gym.spaces.Box(-1.0, 1.0, (n,), np.float32)  # noqa: E731
            self.observation_space = gym.spaces.Dict({"observation": box(4), "achieved_goal": box(3), "desired_goal": box(3)})
            self.action_space = box(2)
            self.t = 0

        def _obs(self):
            rng = self.np_random
            return {k: rng.uniform(-1, 1, s.shape).astype(np.float32) for k, s in self.observation_space.spaces.items()}

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return self._obs(), {}

        def step(self, action):
            self.t += 1
            done = self.t >= 5
            return self._obs(), float(done and action[0] > 0), done, False, {}

    if DICT_GOAL_ENV_ID not in gym.registry:
        gym.register(id=DICT_GOAL_ENV_ID, entry_point=DictGoalEnv)
    return DICT_GOAL_ENV_ID
