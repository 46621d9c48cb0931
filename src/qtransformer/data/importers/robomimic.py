"""robomimic: one HDF5 file of demos, data/demo_<i>/{obs/<key>, actions, rewards, dones, next_obs/<key>}."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..dataset import DatasetError
from .common import (
    DEFAULT_SOURCE,
    ImportResult,
    ImportSourceError,
    _bounds_from_data,
    _build,
    _check_finite,
    _check_image_key,
    _drop_note,
    _episode,
    _episode_without_next,
    _fail,
    _h5py,
    _image_like_reason,
    _numeric,
    _per_step,
)


def read_robomimic(path, env_id: Optional[str] = None, source: Optional[str] = None, images: bool = True) -> ImportResult:
    """A robomimic HDF5 file: data/demo_<i>/{obs/<key>, actions, rewards, dones, next_obs/<key>}.

    Low-dimensional obs keys ((T,) or (T, k)) form the state; uint8 (T, H, W, C) keys become image
    observations (unless `images` is False); other keys with ndim > 2 are skipped with a note."""
    path = Path(path)
    source = source or DEFAULT_SOURCE["robomimic"]
    where = str(path)
    if not path.is_file():
        _fail(f"{where}: no such file; give the path of a robomimic .hdf5 file")
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            return _read_robomimic_open(f, h5py, where, env_id, source, images)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupted files surface as many exception types
        raise ImportSourceError(f"{where}: cannot read ({type(exc).__name__}: {exc}); the file is truncated, corrupted or not an HDF5 file") from exc


def _robomimic_state(demo, group: str, state_keys: list[str], state_dims: dict[str, int], T: int, ew: str) -> np.ndarray:
    """The state keys of demo/<group>, each (T, k), concatenated in sorted key order ((T, 0) without any)."""
    if group not in demo:
        _fail(f"{ew}, field '{group}': missing; every demo needs obs/ (next_obs/ is optional)")
    parts = [np.zeros((T, 0), np.float32)]
    for k in state_keys:
        if k not in demo[group]:
            _fail(f"{ew}, field '{group}/{k}': missing; every demo needs the observation keys {', '.join(state_keys)} (from the first demo)")
        arr = _numeric(ew, f"{group}/{k}", demo[group][k][()])
        if arr.ndim > 2:
            _fail(f"{ew}, field '{group}/{k}': shape {arr.shape}, but in the first demo it is low-dimensional; keep keys consistent")
        arr = arr.reshape(arr.shape[0], -1)
        if arr.shape[0] != T:
            _fail(f"{ew}, field '{group}/{k}': {arr.shape[0]} steps but 'actions' has {T}; every per-step array needs one row per step")
        if state_dims.setdefault(k, arr.shape[1]) != arr.shape[1]:
            _fail(f"{ew}, field '{group}/{k}': {arr.shape[1]} values per step but {state_dims[k]} in the first demo; keep keys consistent")
        _check_finite(ew, f"{group}/{k}", arr)
        parts.append(arr)
    return np.concatenate(parts, axis=1)


def _robomimic_images(demo, image_keys: list[str], image_shapes: dict[str, tuple], T: int, ew: str) -> tuple[dict, dict]:
    """({key: obs/<key> (T, H, W, C) uint8}, {key: next_obs/<key>[-1]}) of one demo; the second is empty without next_obs/."""
    imgs, finals = {}, {}
    for k in image_keys:
        for group in ("obs", "next_obs") if "next_obs" in demo else ("obs",):
            name = f"{group}/{k}"
            if k not in demo[group]:
                _fail(f"{ew}, field '{name}': missing; every demo needs the image keys {', '.join(image_keys)} (from the first demo) "
                      "under obs/ and, when it has next_obs/, under next_obs/; add it or pass --no-images")
            dset = demo[group][k]
            shape, dtype = tuple(dset.shape), np.dtype(dset.dtype)
            if dtype != np.uint8 or len(shape) != 4:
                _fail(f"{ew}, field '{name}': dtype {dtype}, shape {shape}, but in the first demo it is a uint8 (T, H, W, C) image; "
                      "keep keys consistent or pass --no-images")
            if shape[0] != T:
                _fail(f"{ew}, field '{name}': {shape[0]} steps but 'actions' has {T}; every per-step array needs one row per step")
            if image_shapes.setdefault(k, shape[1:]) != shape[1:]:
                _fail(f"{ew}, field '{name}': images of shape {shape[1:]} but {image_shapes[k]} in the first demo; "
                      "resize them to one shape per key")
            if group == "obs":
                imgs[k] = np.asarray(dset[()], dtype=np.uint8)
            else:
                finals[k] = np.asarray(dset[T - 1], dtype=np.uint8)  # only the last row is read
    return imgs, finals


def _read_robomimic_open(f, h5py, where: str, env_id, source: str, images: bool = True) -> ImportResult:
    notes: list[str] = []
    if "data" not in f or not isinstance(f["data"], h5py.Group):
        hint = " (this looks like a D4RL file: use --format d4rl)" if "observations" in f else ""
        _fail(f"{where}, field 'data': missing{hint}; a robomimic file holds groups data/demo_0, data/demo_1, ...")
    data = f["data"]
    demos = []
    for name in data:
        m = re.fullmatch(r"demo_(\d+)", name)
        if m:
            demos.append((int(m.group(1)), name))
    if not demos:
        _fail(f"{where}, field 'data': holds no demo_<i> groups; a robomimic file holds data/demo_0, data/demo_1, ...")
    demos.sort()
    others = sorted(set(data) - {name for _, name in demos})
    if others:
        notes.append(f"ignored entries under data/ that are not demo_<i>: {', '.join(others)}")

    state_keys: Optional[list[str]] = None
    image_keys: list[str] = []
    state_dims: dict[str, int] = {}
    image_shapes: dict[str, tuple] = {}
    skipped: dict[str, str] = {}  # image-like obs key -> why it is not imported
    episodes = []
    dropped = [0, 0, 0]
    repeated_final = 0
    for e, (_, name) in enumerate(demos):
        demo = data[name]
        ew = f"{where}: episode {e} (data/{name})"
        for k in ("obs", "actions", "rewards", "dones"):
            if k not in demo:
                _fail(f"{ew}, field '{k}': missing; every demo needs obs/, actions, rewards and dones")
        if not isinstance(demo["obs"], h5py.Group):
            _fail(f"{ew}, field 'obs': not a group; store one dataset per observation key under obs/")
        actions = _numeric(ew, "actions", demo["actions"][()])
        if actions.ndim == 1:
            actions = actions[:, None]
        if actions.ndim != 2:
            _fail(f"{ew}, field 'actions': shape {actions.shape}, expected (steps, action_dim)")
        T = actions.shape[0]
        if T == 0:
            _fail(f"{ew}, field 'actions': the episode is empty; drop that demo")
        rewards = _per_step(ew, "rewards", demo["rewards"][()])
        dones = _per_step(ew, "dones", demo["dones"][()])
        for k, arr in (("rewards", rewards), ("dones", dones)):
            if arr.shape[0] != T:
                _fail(f"{ew}, field '{k}': {arr.shape[0]} steps but 'actions' has {T}; every per-step array needs one row per step")

        if state_keys is None:  # the first demo decides which keys are state, images or skipped
            state_keys = []
            for k in sorted(demo["obs"]):
                dset = demo["obs"][k]
                if dset.ndim <= 2:
                    state_keys.append(k)
                    continue
                reason = _image_like_reason(dset.dtype, tuple(dset.shape[1:]))
                if reason is None and not images:
                    reason = "--no-images"
                if reason is None:
                    _check_image_key(ew, f"obs/{k}", k)
                    image_keys.append(k)
                else:
                    skipped[k] = reason
            if not state_keys and not image_keys:
                why = "; ".join(f"{k}: {r}" for k, r in sorted(skipped.items()))
                fix = "drop --no-images" if not images else "store low-dimensional state keys or uint8 (T, H, W, C) images"
                _fail(f"{ew}, field 'obs': every observation key is an image, and none can be imported ({why}); {fix}")
        for k in demo["obs"]:
            if k not in state_keys and k not in image_keys and k not in skipped and demo["obs"][k].ndim > 2:
                skipped[k] = "not in the first demo"

        obs = _robomimic_state(demo, "obs", state_keys, state_dims, T, ew)
        imgs, finals = _robomimic_images(demo, image_keys, image_shapes, T, ew)
        _check_finite(ew, "actions", actions)
        _check_finite(ew, "rewards", rewards)
        terminal = bool(dones[-1]) and bool(rewards[-1] > 0)
        if "next_obs" in demo:
            ep = _episode(obs, _robomimic_state(demo, "next_obs", state_keys, state_dims, T, ew), actions, rewards, terminal, source)
            ep["images"], ep["final_images"] = imgs, finals
            episodes.append(ep)
            continue
        ep = _episode_without_next(obs, actions, rewards, terminal, source, imgs)
        if not terminal:
            dropped[0] += 1
            dropped[2] += int(rewards[-1] > 0)
        elif image_keys:
            repeated_final += 1
        if ep is None:
            dropped[1] += 1
        else:
            episodes.append(ep)
    if image_keys:
        shapes = ", ".join(f"{k} {image_shapes[k]}" for k in image_keys)
        notes.append(f"image observation keys imported as uint8 (H, W, C) images: {shapes}")
    if repeated_final:
        notes.append(f"no 'next_obs': the final image of {repeated_final} terminal episode(s) repeats its last obs image "
                     "(a placeholder, like its next observation: a terminal step is not bootstrapped)")
    if skipped:
        notes.append(f"skipped image observation keys (arrays with ndim > 2): "
                     f"{', '.join(f'{k} ({r})' for k, r in sorted(skipped.items()))}")
    if state_keys:
        notes.append(f"state = obs keys flattened in sorted order: {', '.join(state_keys)}")
    else:
        notes.append("state: empty (every obs key is an image); the model reads the images only")
    notes += _drop_note(*dropped, "next_obs")
    low = high = None
    if episodes:
        low, high = _bounds_from_data(np.concatenate([ep["actions"] for ep in episodes]), notes)
    return ImportResult(_build(episodes, low, high, where, env_id), notes)
