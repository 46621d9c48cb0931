"""What the importers share: their error, their result, and the checks and rules every reader applies.

Rules shared by the readers (see docs/dataset_format.md, "Importing"):

- A step that is both terminal and timeout is imported as terminal (its timeout flag is cleared).
- When the source has no next observations, the next observation of step t is observation t+1 of
  the same episode. The final step has none: it is dropped when the episode ended by a timeout (no
  state to bootstrap from; the step before becomes the timeout), and kept when it ended by a
  terminal (no bootstrap, so its own observation is stored as a placeholder).
- Action bounds come from the source when it declares them, otherwise from the data (per-dimension
  min/max); a dimension that is constant in the data is widened by 1 on each side.
- Images (robomimic, Minari), as `envs.rollout.split_observation` sees them: uint8 arrays of shape
  (H, W, C) per step become image observations ("images" and "final_images"); other arrays with more
  than one dimension per step (float images, (H, W) depth maps) are skipped with a note. An image key
  names files, so it must match [A-Za-z0-9_.-]+: a key that does not is rejected (ImportSourceError
  naming the key; rename it in the source or pass images=False / --no-images), never renamed, because
  a renamed key would no longer match the evaluation environment's observation keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..dataset import DatasetError, EpisodeDataset

INSTALL_HINT = "install the import extra: pip install -e '.[import]'"
DEFAULT_SOURCE = {"d4rl": "d4rl", "robomimic": "demonstration", "minari": "minari"}
IMAGE_KEY = re.compile(r"[A-Za-z0-9_.-]+")  # image keys name files (data/store.py)


class ImportSourceError(DatasetError):
    """The source being imported is malformed or unreadable; the message names file, episode, field and fix."""


@dataclass
class ImportResult:
    dataset: EpisodeDataset
    notes: list[str] = field(default_factory=list)
    """Things the user should know: imported and skipped image keys, dropped steps, widened bounds."""


def _fail(msg: str) -> None:
    raise ImportSourceError(msg)


def _h5py():
    try:
        import h5py
    except ImportError as exc:
        raise ImportSourceError(f"reading HDF5 files needs h5py, which is not installed; {INSTALL_HINT}") from exc
    return h5py


def _numeric(where: str, name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        _fail(f"{where}, field '{name}': dtype {arr.dtype} is not numeric; store numbers")
    return arr


def _per_step(where: str, name: str, arr: np.ndarray) -> np.ndarray:
    """A (T,) or (T, 1) array as (T,)."""
    arr = _numeric(where, name, arr)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        _fail(f"{where}, field '{name}': shape {arr.shape}, expected one value per step (steps,)")
    return arr


def _first_bad_row(arr: np.ndarray) -> int:
    """Index of the first row holding NaN or inf, or -1."""
    arr = np.asarray(arr)
    if arr.dtype == bool or arr.shape[0] == 0:
        return -1
    finite = np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    return -1 if finite.all() else int(np.argmin(finite))


def _check_finite(where: str, name: str, arr: np.ndarray) -> None:
    t = _first_bad_row(arr)
    if t >= 0:
        _fail(f"{where}, step {t}, field '{name}': NaN or inf; clean or drop that episode")


def _check_image_key(where: str, field_name: str, key: str) -> None:
    """Image keys name files (images.<key>.npy): reject one that cannot, naming it and the fix."""
    if not IMAGE_KEY.fullmatch(key):
        _fail(f"{where}, field '{field_name}': image key {key!r} cannot name a file (allowed: letters, digits, '_', '-', '.'); "
              "rename it in the source, or pass --no-images to skip the images")


def _image_like_reason(dtype, shape: tuple) -> Optional[str]:
    """Why a per-step array of `dtype` and per-step `shape` (ndim > 1) is not imported as an image, or None."""
    if len(shape) == 2:
        return f"shape (steps, {shape[0]}, {shape[1]}): no channel axis, images are (H, W, C)"
    if len(shape) != 3:
        return f"per-step shape {tuple(shape)}: images are (H, W, C)"
    if np.dtype(dtype) != np.uint8:
        return f"dtype {np.dtype(dtype)}, images must be uint8"
    return None


def _episode(obs, next_obs, actions, rewards, terminal: bool, source: str) -> dict:
    T = len(rewards)
    terminals = np.zeros(T, bool)
    timeouts = np.zeros(T, bool)
    (terminals if terminal else timeouts)[-1] = True
    return {
        "observations": obs, "next_observations": next_obs, "actions": actions, "rewards": rewards,
        "terminals": terminals, "timeouts": timeouts, "source": source,
    }


def _episode_without_next(obs, actions, rewards, terminal: bool, source: str, images: Optional[dict] = None) -> Optional[dict]:
    """Next observations from the observations; None when nothing is left (see the module docstring).
    `images` {key: (T, H, W, C)}: a terminal episode keeps them all and repeats its last image as the final
    image (a placeholder, never bootstrapped from); a timeout episode's dropped last step gives the final image."""
    images = images or {}
    if terminal:
        next_obs = np.concatenate([obs[1:], obs[-1:]])
        ep = _episode(obs, next_obs, actions, rewards, True, source)
        ep["images"], ep["final_images"] = dict(images), {k: v[-1] for k, v in images.items()}
        return ep
    if len(rewards) < 2:
        return None
    ep = _episode(obs[:-1], obs[1:], actions[:-1], rewards[:-1], False, source)
    ep["images"], ep["final_images"] = {k: v[:-1] for k, v in images.items()}, {k: v[-1] for k, v in images.items()}
    return ep


def _drop_note(dropped_steps: int, dropped_episodes: int, dropped_reward_steps: int, field_name: str) -> list[str]:
    if not dropped_steps:
        return []
    note = (
        f"no '{field_name}': dropped the last step of {dropped_steps} episode(s) that ended by a timeout "
        "(no next state to bootstrap from)"
    )
    if dropped_episodes:
        note += f"; {dropped_episodes} one-step episode(s) were dropped whole"
    if dropped_reward_steps:
        note += f"; {dropped_reward_steps} dropped step(s) had a positive reward"
    return [note]


def _bounds_from_data(actions: np.ndarray, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    low = actions.min(axis=0).astype(np.float64)
    high = actions.max(axis=0).astype(np.float64)
    flat = np.flatnonzero(high <= low)
    if flat.size:
        low[flat] -= 1.0
        high[flat] += 1.0
        notes.append(f"action dimension(s) {flat.tolist()} are constant in the data: their bounds were widened by 1 each side")
    notes.append("action bounds taken from the data (per-dimension min/max)")
    return low, high


def _check_bounds(where: str, low, high, d: int) -> tuple[np.ndarray, np.ndarray]:
    low = np.asarray(low, dtype=np.float64).reshape(-1)
    high = np.asarray(high, dtype=np.float64).reshape(-1)
    for name, arr in (("action_low", low), ("action_high", high)):
        if arr.shape != (d,):
            _fail(f"{where}, field '{name}': {arr.shape[0]} entries but the actions have {d} dimensions; give one bound per dimension")
        if not np.isfinite(arr).all():
            _fail(f"{where}, field '{name}': NaN or inf; give finite bounds")
    if np.any(high <= low):
        bad = np.flatnonzero(high <= low).tolist()
        _fail(f"{where}, fields 'action_low'/'action_high': high <= low in dimension(s) {bad}; give high > low")
    return low, high


def _build(episodes: list[dict], low, high, where: str, env_id: Optional[str]) -> EpisodeDataset:
    if not episodes:
        _fail(f"{where}: no episode is left to import; see the notes on dropped steps")
    return EpisodeDataset.from_episodes(episodes, low, high, env_id=env_id, source_path=where)
