"""Minari: a dataset found by id under MINARI_DATASETS_PATH, read through the minari package."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ..dataset import DatasetError
from .common import (
    DEFAULT_SOURCE,
    INSTALL_HINT,
    ImportResult,
    ImportSourceError,
    _bounds_from_data,
    _build,
    _check_finite,
    _check_image_key,
    _episode,
    _fail,
    _image_like_reason,
    _numeric,
    _per_step,
)


def _obs_leaves(space, prefix: str, where: str, leaves: list, images: dict, skipped: dict, want_images: bool = True) -> None:
    """Key paths of the Boxes in `space`, Dict keys in sorted order: state leaves (ndim <= 1 per step) into
    `leaves`; uint8 (H, W, C) Dict leaves into `images` {path: (H, W, C)}; other image-like leaves into
    `skipped` {path: why}."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        for k in sorted(space.spaces):
            _obs_leaves(space.spaces[k], f"{prefix}/{k}" if prefix else k, where, leaves, images, skipped, want_images)
    elif isinstance(space, gym.spaces.Box):
        if len(space.shape) <= 1:
            leaves.append(prefix)
            return
        reason = _image_like_reason(space.dtype, tuple(space.shape))
        if not prefix:
            reason = "the observation space is a Box, not a Dict holding images"
        elif reason is None and not want_images:
            reason = "--no-images"
        if reason is None:
            images[prefix] = tuple(int(x) for x in space.shape)
        else:
            skipped[prefix] = reason
    else:
        name = f"observations/{prefix}" if prefix else "observations"
        _fail(f"{where}, field '{name}': space {space} is not supported; observations must be a Box or a Dict of Boxes")


def _leaf_space(space, path: str):
    for k in path.split("/") if path else []:
        space = space.spaces[k]
    return space


def _leaf(obs, path: str):
    for k in path.split("/") if path else []:
        obs = obs[k]
    return obs


def _image_keys(paths, where: str) -> dict[str, str]:
    """{leaf path: image key}: '/' becomes '.'; a key that cannot name a file, or two paths giving one key, fail."""
    keys: dict[str, str] = {}
    for p in paths:
        key = p.replace("/", ".")
        _check_image_key(where, f"observations/{p}", key)
        other = next((q for q, k in keys.items() if k == key), None)
        if other is not None:
            _fail(f"{where}, field 'observations/{p}': its image key '{key}' is also the key of 'observations/{other}' "
                  "('/' becomes '.'); rename one of them in the source, or pass --no-images")
        keys[p] = key
    return keys


def read_minari(dataset_id: str, env_id: Optional[str] = None, source: Optional[str] = None, images: bool = True) -> ImportResult:
    """A Minari dataset, found by id under MINARI_DATASETS_PATH (default ~/.minari/datasets).

    Dict observation leaves that are uint8 Boxes of shape (H, W, C) become image observations (key: the
    leaf path with '/' replaced by '.'; unless `images` is False); other leaves with ndim > 1 are skipped."""
    try:
        import gymnasium as gym
        import minari
    except ImportError as exc:
        raise ImportSourceError(f"importing Minari datasets needs minari, which is not installed; {INSTALL_HINT}") from exc
    source = source or DEFAULT_SOURCE["minari"]
    root = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
    where = f"minari dataset '{dataset_id}'"
    try:
        mds = minari.load_dataset(str(dataset_id))
    except FileNotFoundError as exc:
        raise ImportSourceError(
            f"{where}: not found under {root}; set MINARI_DATASETS_PATH to the folder that holds it, "
            f"or download it with `minari download {dataset_id}`"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - corrupted files or a malformed id
        raise ImportSourceError(f"{where}: cannot load ({type(exc).__name__}: {exc}); check the id, and that its files under {root} are complete") from exc
    notes: list[str] = []
    try:
        obs_space, act_space = mds.observation_space, mds.action_space
        spec = mds.env_spec
    except Exception as exc:  # noqa: BLE001
        raise ImportSourceError(f"{where}: cannot read its metadata ({type(exc).__name__}: {exc}); the dataset is corrupted") from exc
    if not isinstance(act_space, gym.spaces.Box):
        _fail(f"{where}, field 'actions': action space {act_space} is not a Box; Q-Transformer needs continuous actions")
    leaves: list[str] = []
    image_shapes: dict[str, tuple] = {}
    skipped: dict[str, str] = {}
    _obs_leaves(obs_space, "", where, leaves, image_shapes, skipped, images)
    image_keys = _image_keys(image_shapes, where)
    if skipped:
        listed = ", ".join(f"{p or '<observation>'} ({r})" for p, r in skipped.items())
        notes.append(f"skipped image observation keys (ndim > 1 per step): {listed}")
    if not leaves and not image_shapes:
        fix = "drop --no-images" if not images else "store low-dimensional states or uint8 (H, W, C) images in a Dict observation"
        _fail(f"{where}, field 'observations': every observation is an image, and none can be imported; {fix}")
    if image_shapes:
        notes.append("image observation keys imported as uint8 (H, W, C) images: "
                     + ", ".join(f"{image_keys[p]} {shape}" + (f" (from '{p}')" if image_keys[p] != p else "") for p, shape in image_shapes.items()))
        if getattr(getattr(mds, "storage", None), "jpeg_encoding", False):
            try:
                from minari.dataset.minari_storage import is_image_space

                lossy = [image_keys[p] for p in image_shapes if is_image_space(_leaf_space(obs_space, p))]
            except Exception:  # noqa: BLE001 - another minari version: say nothing
                lossy = []
            if lossy:
                notes.append(f"Minari stored images {', '.join(lossy)} JPEG-encoded: the imported images are the decoded (lossy) frames")
    if isinstance(obs_space, gym.spaces.Dict):
        if leaves:
            notes.append(f"state = Dict observation keys flattened in sorted order: {', '.join(leaves)}")
        else:
            notes.append("state: empty (every observation key is an image); the model reads the images only")

    episodes = []
    try:
        for e, ep in enumerate(mds.iterate_episodes()):
            ew = f"{where}: episode {e} (id {ep.id})"
            actions = _numeric(ew, "actions", ep.actions)
            T = actions.shape[0] if actions.ndim else 0
            if T == 0:
                _fail(f"{ew}, field 'actions': the episode is empty; drop it")
            actions = actions.reshape(T, -1)
            parts = []
            for p in leaves:
                name = f"observations/{p}" if p else "observations"
                arr = _numeric(ew, name, _leaf(ep.observations, p))
                if arr.shape[0] != T + 1:
                    _fail(f"{ew}, field '{name}': {arr.shape[0]} rows but {T} actions; Minari stores one more observation than actions")
                arr = arr.reshape(T + 1, -1)
                _check_finite(ew, name, arr)
                parts.append(arr)
            all_obs = np.concatenate([np.zeros((T + 1, 0), np.float32), *parts], axis=1)
            imgs = {}
            for p, shape in image_shapes.items():
                name = f"observations/{p}"
                arr = np.asarray(_leaf(ep.observations, p))
                if arr.dtype != np.uint8 or arr.shape != (T + 1, *shape):
                    _fail(f"{ew}, field '{name}': dtype {arr.dtype}, shape {arr.shape}, but the observation space says uint8 "
                          f"{(T + 1, *shape)} (one more observation than actions); the dataset is corrupted, or pass --no-images")
                imgs[image_keys[p]] = arr
            rewards = _per_step(ew, "rewards", ep.rewards)
            terms = _per_step(ew, "terminations", ep.terminations).astype(bool)
            truncs = _per_step(ew, "truncations", ep.truncations).astype(bool)
            for k, arr in (("rewards", rewards), ("terminations", terms), ("truncations", truncs)):
                if arr.shape[0] != T:
                    _fail(f"{ew}, field '{k}': {arr.shape[0]} steps but 'actions' has {T}; every per-step array needs one row per step")
            _check_finite(ew, "actions", actions)
            _check_finite(ew, "rewards", rewards)
            inner = (terms | truncs)[:-1]
            if inner.any():
                t = int(np.argmax(inner))
                _fail(f"{ew}, step {t}, field 'terminations'/'truncations': set before the episode's last step; split the episode there")
            if not (terms[-1] or truncs[-1]):
                notes.append(f"episode {e} ends with neither termination nor truncation: imported as a timeout")
            episode = _episode(all_obs[:-1], all_obs[1:], actions, rewards, bool(terms[-1]), source)
            episode["images"] = {k: v[:-1] for k, v in imgs.items()}  # (T, H, W, C): the image at each step
            episode["final_images"] = {k: v[-1] for k, v in imgs.items()}  # observation T: after the last step
            episodes.append(episode)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupted episode data
        raise ImportSourceError(f"{where}: cannot read its episodes ({type(exc).__name__}: {exc}); the dataset is truncated or corrupted") from exc
    if not episodes:
        _fail(f"{where}: holds no episodes; add some episodes")

    d = episodes[0]["actions"].shape[1]
    low, high = np.asarray(act_space.low, np.float64).reshape(-1), np.asarray(act_space.high, np.float64).reshape(-1)
    if low.shape == (d,) and np.isfinite(low).all() and np.isfinite(high).all() and np.all(high > low):
        notes.append("action bounds taken from the dataset's action space")
    else:
        low, high = _bounds_from_data(np.concatenate([ep["actions"] for ep in episodes]), notes)
    if env_id is None and spec is not None:
        env_id = getattr(spec, "id", None)
    return ImportResult(_build(episodes, low, high, where, env_id), notes)
