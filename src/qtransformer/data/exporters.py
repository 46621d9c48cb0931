"""Export a dataset folder to other formats: a local Minari dataset (the mirror of `read_minari`).

`export_minari` opens the dataset with `EpisodeStore.open` and writes it chunk by chunk (so only one
chunk is in memory at a time) as a Minari dataset under MINARI_DATASETS_PATH (default
~/.minari/datasets), the folder `minari.load_dataset` reads. See docs/dataset_format.md, "Exporting
to Minari":

- Per episode of T steps: observations (T+1 rows: the step observations plus the episode's last
  next observation), actions, rewards, terminations = terminals, truncations = timeouts.
- Observation space: Box(-inf, inf, (obs_dim,), float32); with images, Dict {"state": that Box,
  <image key>: Box(0, 255, (H, W, C), uint8)} whose image sequence is the images of the episode's
  steps plus its final image. Images are stored losslessly (no JPEG encoding).
- Action space: Box(action_low, action_high) float32.
- Per episode, Minari's episode metadata holds `source`, `task` (id) and `task_name`.
- The environment id is not passed to Minari (minari 0.5.4 makes the environment for any `env`
  argument, and resolves an `eval_env` id only when it is registered): it is recorded in the dataset
  metadata under "qtransformer" ({"env_id", "task_names", "source_path", ...}) and in the description.

Every failure raises `ExportError` (a `DatasetError`) with a one-line message; a Minari dataset that
is partly written when something fails is removed.
"""

from __future__ import annotations

import inspect
import os
import shutil
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from .dataset import DatasetError, EpisodeDataset
from .importers import INSTALL_HINT

STATE_KEY = "state"


class ExportError(DatasetError):
    """The export cannot be done (existing id, malformed id, missing package); the message names the fix."""


def _minari():
    try:
        import gymnasium as gym
        import minari
    except ImportError as exc:
        raise ExportError(f"exporting to Minari needs minari, which is not installed; {INSTALL_HINT}") from exc
    return gym, minari


def _images(ds: EpisodeDataset) -> tuple[dict, dict]:
    """(images, final_images) of a chunk; empty for datasets without image observations."""
    return dict(getattr(ds, "images", None) or {}), dict(getattr(ds, "final_images", None) or {})


def _spaces(gym, chunks: list[EpisodeDataset], where: str):
    first = chunks[0]
    state = gym.spaces.Box(-np.inf, np.inf, (first.obs_dim,), np.float32)
    act = gym.spaces.Box(np.asarray(first.action_low, np.float32), np.asarray(first.action_high, np.float32), dtype=np.float32)
    images = _images(first)[0]
    if not images:
        obs = state
    else:
        if STATE_KEY in images:
            raise ExportError(f"{where}: image key '{STATE_KEY}' clashes with the state entry of the Minari Dict observation; rename that image key")
        spaces = {STATE_KEY: state}
        for k in sorted(images):
            shape = tuple(int(s) for s in np.shape(images[k])[1:])
            if len(shape) != 3:
                raise ExportError(f"{where}, field 'images/{k}': shape {np.shape(images[k])}, expected (steps, H, W, C)")
            spaces[k] = gym.spaces.Box(0, 255, shape, np.uint8)
        obs = gym.spaces.Dict(spaces)
    for c in chunks:
        imgs, fins = _images(c)
        if sorted(imgs) != sorted(images) or sorted(fins) != sorted(images):
            raise ExportError(
                f"{c.source_path}: image keys {sorted(imgs)} / final image keys {sorted(fins)} differ from "
                f"{sorted(images)} in the first chunk; every chunk needs the same image keys"
            )
    return obs, act


def _episode_buffers(EpisodeBuffer, ds: EpisodeDataset, first_id: int, with_images: bool, notes: list[str]) -> list:
    """EpisodeBuffers (ids first_id, first_id + 1, ...) of one chunk, built from whole arrays."""
    starts = np.asarray(ds.episode_starts)
    images, finals = _images(ds) if with_images else ({}, {})
    obs_all, next_all = ds.observations, ds.next_observations
    buffers = []
    mismatched = 0
    for e in range(ds.num_episodes):
        s, t = int(starts[e]), int(starts[e + 1])
        obs = np.asarray(obs_all[s:t], dtype=np.float32)
        nxt = np.asarray(next_all[s:t], dtype=np.float32)
        mismatched += int(np.any(nxt[:-1] != obs[1:], axis=1).sum())
        state = np.concatenate([obs, nxt[-1:]])
        if images:
            observations = {STATE_KEY: state}
            for k in images:
                observations[k] = np.concatenate([np.asarray(images[k][s:t], np.uint8), np.asarray(finals[k][e : e + 1], np.uint8)])
        else:
            observations = state
        buffers.append(EpisodeBuffer(
            id=first_id + e,
            observations=observations,
            actions=np.asarray(ds.actions[s:t], dtype=np.float32),
            rewards=np.asarray(ds.rewards[s:t], dtype=np.float32),
            terminations=np.asarray(ds.terminals[s:t], dtype=bool),
            truncations=np.asarray(ds.timeouts[s:t], dtype=bool),
        ))
    if mismatched:
        notes.append(
            f"{ds.source_path}: {mismatched} step(s) have a next observation that differs from the following step's "
            "observation; Minari keeps one observation sequence, so those next observations were not exported"
        )
    return buffers


def _episode_metadata(ds: EpisodeDataset, task_names: list[str]) -> list[dict]:
    return [
        {"source": str(src), "task": int(task), "task_name": str(task_names[int(task)])}
        for src, task in zip(ds.episode_source, np.asarray(ds.episode_task).tolist(), strict=True)
    ]


def export_episodes_minari(
    chunks: list[EpisodeDataset],
    dataset_id: str,
    env_id: Optional[str] = None,
    source_path: str = "<memory>",
    notes: Optional[list[str]] = None,
) -> Path:
    """Write `chunks` (EpisodeDatasets sharing spaces and task names) as the Minari dataset `dataset_id`."""
    gym, minari = _minari()
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.storage.datasets_root_dir import get_dataset_path

    notes = [] if notes is None else notes
    where = f"minari dataset '{dataset_id}'"
    root = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
    try:
        parse_dataset_id(str(dataset_id))
    except ValueError as exc:
        raise ExportError(
            f"{where}: malformed id; Minari ids look like (namespace/)name-v<version>, e.g. qtransformer/pointreach-v0"
        ) from exc
    if not chunks:
        raise ExportError(f"{source_path}: holds no episodes; nothing to export")
    target = Path(get_dataset_path(dataset_id))
    exists = ExportError(
        f"{where}: already exists under {root}; choose another --dataset-id (e.g. bump the -v<version>) "
        f"or delete it first with `minari delete {dataset_id}`"
    )
    if target.exists():
        raise exists
    obs_space, act_space = _spaces(gym, chunks, source_path)
    with_images = isinstance(obs_space, gym.spaces.Dict)
    task_names = list(chunks[-1].task_names)  # appends only add names: the last chunk's list covers every chunk
    num_episodes = sum(c.num_episodes for c in chunks)
    num_steps = sum(c.num_steps for c in chunks)
    description = (
        f"Exported by qtransformer from {source_path}: {num_episodes} episodes, {num_steps} steps, env {env_id}, "
        f"tasks {task_names}. Per-episode source/task/task_name are in the episode metadata."
    )
    extra = {}
    if "jpeg_encoding" in inspect.signature(minari.create_dataset_from_buffers).parameters:
        extra["jpeg_encoding"] = False  # keep images lossless
    mds = None
    try:
        first_id = 0
        for c in chunks:
            buffers = _episode_buffers(EpisodeBuffer, c, first_id, with_images, notes)
            if mds is None:
                with warnings.catch_warnings():  # Minari asks for author, code permalink, ...: unknown here
                    warnings.simplefilter("ignore", UserWarning)
                    mds = minari.create_dataset_from_buffers(
                        dataset_id, buffers, env=None, observation_space=obs_space, action_space=act_space,
                        description=description, **extra,
                    )
            else:
                mds.update_dataset_from_buffer(buffers)
            mds.storage.update_episode_metadata(_episode_metadata(c, task_names), range(first_id, first_id + c.num_episodes))
            first_id += c.num_episodes
        mds.storage.update_metadata({
            "qtransformer": {
                "env_id": env_id,
                "task_names": task_names,
                "source_path": source_path,
                "num_episodes": num_episodes,
                "num_steps": num_steps,
                "observation_keys": [STATE_KEY, *sorted(_images(chunks[0])[0])] if with_images else None,
            }
        })
    except BaseException as exc:
        if mds is None and isinstance(exc, ValueError) and "already exists" in str(exc):
            raise exists from exc  # another writer took the id since the check above: its folder is not ours to remove
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # created by this call (checked above): leave nothing half-written
        if isinstance(exc, DatasetError) or not isinstance(exc, Exception):
            raise
        raise ExportError(f"{where}: writing failed ({type(exc).__name__}: {' '.join(str(exc).split())}); nothing was kept under {root}") from exc
    if env_id is None:
        notes.append("the dataset has no env_id: none recorded (give one with --env-id)")
    return target


def export_minari(dataset_path, dataset_id: str, env_id: Optional[str] = None, notes: Optional[list[str]] = None) -> Path:
    """Export the dataset folder at `dataset_path` as the local Minari dataset `dataset_id`; returns its folder.

    `env_id` overrides the dataset's env_id; it is recorded in the Minari metadata under "qtransformer".
    Notes for the user (e.g. next observations that could not be exported) are appended to `notes`.
    """
    from .store import EpisodeStore

    _minari()
    store = EpisodeStore.open(dataset_path)
    return export_episodes_minari(store.chunks, dataset_id, env_id=env_id or store.env_id, source_path=str(store.path), notes=notes)


__all__ = ["ExportError", "export_episodes_minari", "export_minari"]
