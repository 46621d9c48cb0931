"""The on-disk episode store: memory-mapped chunks, atomic appends.

    DATASET/
      meta.json                 the index: format_version, env_id, action bounds, task_names, obs/action
                                dims, the list of committed chunks, episode and step counts
      chunks/000000/            one chunk per write (create, then each append)
        observations.npy        (N_c, obs_dim) float32      next_observations.npy  (N_c, obs_dim) float32
        actions.npy             (N_c, d) float32            rewards.npy            (N_c,) float32
        terminals.npy           (N_c,) bool                 timeouts.npy           (N_c,) bool
        episode_starts.npy      (E_c+1,) int64              episode_task.npy       (E_c,) int64
        episodes.json           {"source": [E_c labels], "instruction": [E_c texts] or []}
        images.<key>.npy        (N_c, H, W, C) uint8        image observations, one file per camera key
        final_images.<key>.npy  (E_c, H, W, C) uint8        the image after each episode's last step

The wide step arrays (observations, next observations, actions, images) are memory-mapped
(`np.load(mmap_mode="r")`); rewards, end flags, final images and the per-episode arrays (one value per
step or episode) are read into memory. Training gathers rows on demand, so a dataset larger than RAM
trains. Each memory map holds an open file: opening raises the process's open-file limit as far as its
hard limit allows, and `compact_dataset` (`qtransformer compact`) merges the chunks that many appends
leave. Episodes never span chunks.

An append validates the new episodes, writes a chunk into a temporary folder, fsyncs and renames it,
then replaces meta.json atomically; it reads meta.json only, not the chunks. meta.json is the commit point: a crash at any moment leaves the
dataset readable exactly as before (an uncommitted chunk folder is ignored, and removed by the next
append). One writer at a time: an append holds an exclusive lock on DATASET/.lock.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..fileio import atomic_write_text, fsync_tree, make_temp_dir, read_versioned_json, replace_dir
from .dataset import DTYPES, STEP_FIELDS, DatasetError, EpisodeDataset

FORMAT_VERSION = 2
CHUNK_ARRAYS = (*STEP_FIELDS, "episode_starts", "episode_task")
_CHUNK_NAME = re.compile(r"[0-9]{6,}")  # chunks/<name>: what meta.json's 'chunks' may list
_TMP_CHUNK_NAME = re.compile(r"\.[0-9]{6,}\.tmp-[A-Za-z0-9_]+")  # a chunk being written
MAX_DIM = 10_000_000  # the largest obs_dim, action_dim or image side meta.json may declare
_BLOCK = 262_144  # rows per block of a streamed pass over a chunk
# Tests set this to a file path: an append then creates the file and waits after writing its chunk and
# before committing it, so a test can kill the process at that exact point.
_PAUSE_ENV = "QTRANSFORMER_TEST_APPEND_PAUSE_FILE"


def _write_chunk(folder: Path, ds: EpisodeDataset) -> None:
    folder.mkdir(parents=True)
    for name in CHUNK_ARRAYS:
        np.save(folder / f"{name}.npy", np.ascontiguousarray(getattr(ds, name), dtype=DTYPES[name]))
    (folder / "episodes.json").write_text(json.dumps({"source": ds.episode_source, "instruction": ds.episode_instruction}))
    for key in ds.images:
        np.save(folder / f"images.{key}.npy", np.ascontiguousarray(ds.images[key], dtype=np.uint8))
        np.save(folder / f"final_images.{key}.npy", np.ascontiguousarray(ds.final_images[key], dtype=np.uint8))
    fsync_tree(folder)


def _map(f: Path, dtype, mmap: bool = True) -> np.ndarray:
    """The array in `f`, memory-mapped (each map holds an open file while it lives) or, with mmap=False, read into memory."""
    if not f.exists():
        raise DatasetError(f"{f}: missing; the dataset is damaged (see docs/dataset_format.md for a chunk's files)")
    try:
        arr = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupted .npy files
        raise DatasetError(f"{f}: cannot read ({exc}); the file is truncated or corrupted") from exc
    if arr.dtype != np.dtype(dtype):
        raise DatasetError(f"{f}: dtype {arr.dtype}, expected {np.dtype(dtype)}; see docs/dataset_format.md")
    return arr


MAPPED = ("observations", "next_observations", "actions")  # the wide per-step arrays stay on disk; the rest is read into memory


def _read_chunk(folder: Path, meta: dict, mmap: bool = True) -> EpisodeDataset:
    """A chunk: its observations, next observations, actions and images memory-mapped (with mmap; each an
    open file), everything else (one value per step or per episode) read into memory."""
    arrays = {}
    for name in CHUNK_ARRAYS:
        arrays[name] = _map(folder / f"{name}.npy", DTYPES[name], mmap and name in MAPPED)
    keys = sorted(meta.get("image_shapes", {}))
    arrays["images"] = {k: _map(folder / f"images.{k}.npy", np.uint8, mmap) for k in keys}
    arrays["final_images"] = {k: _map(folder / f"final_images.{k}.npy", np.uint8, False) for k in keys}
    try:
        per_episode = json.loads((folder / "episodes.json").read_text())
        sources, instructions = per_episode["source"], per_episode.get("instruction", [])
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"{folder / 'episodes.json'}: cannot read the episode sources ({exc}); the dataset is damaged") from exc
    ds = EpisodeDataset(
        **arrays,
        episode_source=list(sources),
        episode_instruction=list(instructions),
        action_low=np.asarray(meta["action_low"], dtype=np.float32),
        action_high=np.asarray(meta["action_high"], dtype=np.float32),
        task_names=list(meta["task_names"]),
        env_id=meta.get("env_id"),
        source_path=str(folder),
    )
    ds.validate(values=False)  # shapes and offsets only: the values were checked when the chunk was written
    return ds


def _check_meta(meta: dict, meta_path: Path) -> None:
    """The fields of meta.json, before anything is read by them: types, ranges and chunk names."""

    def fail(key: str, msg: str) -> None:
        raise DatasetError(f"{meta_path}: field '{key}' {msg}; the dataset is damaged: repair meta.json (docs/dataset_format.md) or make the dataset again")

    for key in ("action_low", "action_high", "task_names", "obs_dim", "action_dim", "chunks"):
        if key not in meta:
            raise DatasetError(f"{meta_path}: missing field '{key}'; the dataset is damaged")

    def whole(key: str, low: int, high: int) -> None:
        v = meta[key]
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            fail(key, f"must be a whole number in [{low}, {high}], got {v!r}")

    whole("obs_dim", 0, MAX_DIM)
    whole("action_dim", 1, MAX_DIM)
    d = meta["action_dim"]
    for key in ("action_low", "action_high"):
        v = meta[key]
        if not (isinstance(v, list) and len(v) == d and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            fail(key, f"must be a list of {d} numbers (one per action dimension), got {str(v)[:80]!r}")
    low, high = np.asarray(meta["action_low"], dtype=np.float64), np.asarray(meta["action_high"], dtype=np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all()) or np.any(high <= low):
        fail("action_low/action_high", f"must be finite with high > low in every dimension, got [{low.tolist()}, {high.tolist()}]")
    names = meta["task_names"]
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        fail("task_names", f"must be a non-empty list of strings, got {str(names)[:80]!r}")
    if meta.get("env_id") is not None and not isinstance(meta["env_id"], str):
        fail("env_id", f"must be a string or null, got {meta['env_id']!r}")
    shapes = meta.get("image_shapes", {})
    if not isinstance(shapes, dict) or any(
        not (isinstance(k, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", k) and isinstance(v, list) and len(v) == 3
             and all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= MAX_DIM for x in v))
        for k, v in shapes.items()
    ):
        fail("image_shapes", f"must map camera names to [H, W, C] (positive whole numbers), got {str(shapes)[:80]!r}")
    chunks = meta["chunks"]
    if not isinstance(chunks, list):
        fail("chunks", f"must be a list of chunk names, got {str(chunks)[:80]!r}")
    for name in chunks:
        if not (isinstance(name, str) and _CHUNK_NAME.fullmatch(name)):
            fail("chunks", f"lists {name!r}, not a chunk name (digits such as 000000: a folder under chunks/, never a path)")
    seen = set()
    for name in chunks:
        if name in seen:
            fail("chunks", f"lists the chunk {name} twice (its episodes would count double)")
        seen.add(name)


def _release(arr: np.ndarray) -> None:
    """Drop the pages of a memory map that a full pass made resident (they stay in the page cache)."""
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise"):
        mm.madvise(mmap.MADV_DONTNEED)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class EpisodeStore:
    """An opened dataset folder: `chunks` are EpisodeDatasets whose wide step arrays are memory maps."""

    def __init__(self, path: Path, meta: dict, chunks: list[EpisodeDataset]):
        self.path, self.meta, self.chunks = Path(path), meta, chunks

    # -- facts ------------------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        return sum(c.num_episodes for c in self.chunks)

    @property
    def num_steps(self) -> int:
        return sum(c.num_steps for c in self.chunks)

    @property
    def obs_dim(self) -> int:
        return int(self.meta["obs_dim"])

    @property
    def action_dim(self) -> int:
        return int(self.meta["action_dim"])

    @property
    def image_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v) for k, v in sorted(self.meta.get("image_shapes", {}).items())}

    @property
    def action_low(self) -> np.ndarray:
        return np.asarray(self.meta["action_low"], dtype=np.float32)

    @property
    def action_high(self) -> np.ndarray:
        return np.asarray(self.meta["action_high"], dtype=np.float32)

    @property
    def task_names(self) -> list[str]:
        return list(self.meta["task_names"])

    @property
    def num_tasks(self) -> int:
        return len(self.meta["task_names"])

    @property
    def env_id(self) -> Optional[str]:
        return self.meta.get("env_id")

    def size_on_disk(self) -> int:
        return _dir_size(self.path)

    def episode_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per episode over all chunks: (source labels, task ids, success)."""
        sources = np.asarray([s for c in self.chunks for s in c.episode_source])
        tasks = np.concatenate([c.episode_task for c in self.chunks])
        success = np.concatenate([c.episode_success() for c in self.chunks])
        return sources, tasks, success

    def success_by(self, key: str) -> dict[str, tuple[int, float]]:
        """{source or task name: (episodes, success rate)}; key is 'source' or 'task'."""
        sources, tasks, success = self.episode_table()
        labels = sources if key == "source" else np.asarray([self.task_names[t] for t in tasks])
        return {str(v): (int((labels == v).sum()), float(success[labels == v].mean())) for v in sorted(set(labels.tolist()))}

    def success_by_source(self) -> dict[str, tuple[int, float]]:
        return self.success_by("source")

    def observation_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of observations and next observations, streamed chunk by chunk (float64 sums)."""
        n, total, total_sq = 0, np.zeros(self.obs_dim), np.zeros(self.obs_dim)
        for c in self.chunks:
            for arr in (c.observations, c.next_observations):
                for start in range(0, arr.shape[0], 262_144):
                    block = np.asarray(arr[start : start + 262_144], dtype=np.float64)
                    n += block.shape[0]
                    total += block.sum(0)
                    total_sq += np.square(block).sum(0)
                _release(arr)
        mean = total / n
        return mean.astype(np.float32), np.sqrt(np.maximum(total_sq / n - mean**2, 0.0)).astype(np.float32)

    def check_values(self) -> None:
        """Check every stored value once, chunk by chunk in blocks (vectorised; memory maps stay small):
        observations, next observations, actions and rewards finite, rewards in [0, 1], actions inside
        the dataset's bounds. Raises a DatasetError naming the file, the episode and the step."""
        low, high = self.action_low, self.action_high
        tol = 1e-5 * np.maximum(1.0, high - low)
        first_episode = 0
        for c in self.chunks:
            for name in ("observations", "next_observations", "actions", "rewards"):
                arr = getattr(c, name)
                for start in range(0, arr.shape[0], _BLOCK):
                    block = np.asarray(arr[start : start + _BLOCK])
                    rows = block.reshape(block.shape[0], int(np.prod(arr.shape[1:], dtype=np.int64)))  # (n, width), width may be 0
                    problems = [(~np.isfinite(rows).all(axis=1), "NaN or inf", "clean or drop that episode")]
                    if name == "rewards":
                        problems.append((((rows < 0) | (rows > 1)).any(axis=1), "outside [0, 1]",
                                         "Q-Transformer's sigmoid head assumes sparse rewards in [0, 1] (1 on success): rescale them"))
                    if name == "actions":
                        problems.append((((rows < low - tol) | (rows > high + tol)).any(axis=1),
                                         f"outside the dataset's bounds [{low.tolist()}, {high.tolist()}] (meta.json 'action_low'/'action_high')",
                                         "clip the actions or widen the bounds"))
                    for mask, what, fix in problems:
                        if mask.any():
                            t = start + int(np.argmax(mask))
                            e = int(np.searchsorted(c.episode_starts, t, side="right")) - 1
                            raise DatasetError(
                                f"{Path(c.source_path) / (name + '.npy')}: episode {first_episode + e} (episode {e} of this chunk), "
                                f"step {t - int(c.episode_starts[e])}, field '{name}': {np.asarray(arr[t]).tolist()} is {what}; {fix}"
                            )
                _release(arr)
            first_episode += c.num_episodes

    def to_dataset(self) -> EpisodeDataset:
        """All chunks concatenated in memory, fully validated."""
        return EpisodeDataset.concatenate(self.chunks, source_path=str(self.path))

    # -- open / create / append -------------------------------------------------------------------
    @classmethod
    def open(cls, path) -> "EpisodeStore":
        path = Path(path)
        meta_path = path / "meta.json"
        if not path.is_dir():
            raise DatasetError(f"{path}: no dataset folder here; make one with `qtransformer make-dataset builtin --out {path}` or `qtransformer import`")
        if not meta_path.exists():
            raise DatasetError(f"{meta_path}: missing; a dataset folder holds meta.json and chunks/")
        meta = read_versioned_json(meta_path, FORMAT_VERSION, DatasetError)
        _check_meta(meta, meta_path)
        # per chunk: the maps of observations, next observations, actions and images, and the sampler's reads of all but actions
        _make_room_for_maps(path, len(meta["chunks"]) * (len(MAPPED) + 2 + 2 * len(meta.get("image_shapes", {}))))
        chunks = [_read_chunk(path / "chunks" / name, meta) for name in meta["chunks"]]
        for c in chunks:
            if c.obs_dim != meta["obs_dim"] or c.action_dim != meta["action_dim"]:
                raise DatasetError(f"{c.source_path}: observations ({c.obs_dim},) / actions ({c.action_dim},) disagree with {meta_path}")
            if c.image_shapes != {k: tuple(v) for k, v in meta.get("image_shapes", {}).items()}:
                raise DatasetError(f"{c.source_path}: image shapes {c.image_shapes} disagree with {meta_path}")
        if not chunks:
            raise DatasetError(f"{meta_path}: field 'chunks' is empty; the dataset holds no episode")
        return cls(path, meta, chunks)

    @classmethod
    def create(cls, path, ds: EpisodeDataset) -> "EpisodeStore":
        """Write a new dataset folder (replacing an existing dataset there, never any other folder)."""
        _check_new_episodes(ds)
        path = Path(path)
        if path.exists() and not (path.is_dir() and (path / "meta.json").exists()):
            raise DatasetError(f"{path}: exists and is not a dataset folder; choose another output folder (nothing was written)")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(f".{path.name}.tmp-", path.parent)
        try:
            _write_chunk(tmp / "chunks" / "000000", ds)
            atomic_write_text(tmp / "meta.json", json.dumps(_new_meta(ds), indent=1))
            replace_dir(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return cls.open(path)

    def append(self, ds: EpisodeDataset, reopen: bool = True) -> Optional["EpisodeStore"]:
        """Add `ds`'s episodes as a new chunk; returns the re-opened store (None with reopen=False: an append
        then reads meta.json only, whatever the number of chunks). Nothing changes if a check fails."""
        with _locked(self.path):
            _committed(self.path)._append_locked(ds)  # the newest committed state
        return EpisodeStore.open(self.path) if reopen else None

    @property
    def _counts(self) -> tuple[int, int]:
        """(episodes, steps): from the chunks when they are open, else from meta.json."""
        if self.chunks:
            return self.num_episodes, self.num_steps
        return int(self.meta["num_episodes"]), int(self.meta["num_steps"])

    def _append_locked(self, ds: EpisodeDataset) -> None:
        """The append itself; the caller holds the dataset's lock and opened `self` (or its index) under it."""
        ds = self._conform(ds)
        episodes, steps = self._counts
        _commit_chunk(self.path, self.meta, ds, self.meta["chunks"], pause=True, task_names=ds.task_names,
                      num_episodes=episodes + ds.num_episodes, num_steps=steps + ds.num_steps)

    def compact(self) -> "EpisodeStore":
        """Rewrite all chunks as one: `compact_dataset(self.path)`; returns the re-opened store."""
        return compact_dataset(self.path)

    def _conform(self, ds: EpisodeDataset) -> EpisodeDataset:
        """Check `ds` fits this store and map its task ids onto the store's task names (new ones appended)."""
        where = f"{self.path} (append)"
        if ds.obs_dim != self.obs_dim or ds.action_dim != self.action_dim:
            raise DatasetError(
                f"{where}: new episodes have observations ({ds.obs_dim},) and actions ({ds.action_dim},), the dataset "
                f"({self.obs_dim},) and ({self.action_dim},); append episodes of the same environment"
            )
        if ds.image_shapes != self.image_shapes:
            raise DatasetError(f"{where}: new episodes have images {ds.image_shapes}, the dataset {self.image_shapes}; append episodes with the same cameras")
        low, high = self.action_low, self.action_high
        tol = 1e-5 * np.maximum(1.0, high - low)
        outside = ((ds.actions < low - tol) | (ds.actions > high + tol)).any(axis=1)
        if outside.any():
            t = int(np.argmax(outside))
            raise DatasetError(f"{where}: step {t}, field 'actions': {ds.actions[t].tolist()} lies outside the dataset's bounds "
                               f"[{low.tolist()}, {high.tolist()}]; clip the actions")
        names = self.task_names
        for n in ds.task_names:
            if n not in names:
                names.append(n)
        remap = np.asarray([names.index(n) for n in ds.task_names], dtype=np.int64)
        return EpisodeDataset(
            **{k: getattr(ds, k) for k in STEP_FIELDS},
            episode_starts=ds.episode_starts,
            episode_task=remap[ds.episode_task],
            episode_source=ds.episode_source,
            episode_instruction=ds.episode_instruction,
            action_low=low,
            action_high=high,
            task_names=names,
            env_id=self.env_id,
            images=ds.images,
            final_images=ds.final_images,
        )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock DATASET/.lock (one writer at a time: appends and the creation of a new dataset)."""
    try:
        fh = open(Path(path) / ".lock", "a")
    except OSError as exc:
        raise DatasetError(f"{Path(path) / '.lock'}: cannot open the dataset's lock for writing ({exc.strerror}); "
                           "write into a dataset folder you may write to") from exc
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def compact_dataset(path) -> EpisodeStore:
    """Rewrite all chunks of the dataset at `path` as one (the episodes, their order and meta.json's facts
    unchanged); returns the re-opened store. Many appends leave many chunks, and each chunk's memory maps
    hold open files while a dataset is read (`qtransformer compact DATASET`; `qtransformer finetune`
    compacts its online dataset as it goes). The chunks are read one at a time into memory, so any
    number of chunks compacts; the dataset is held in memory twice, briefly (its parts and the merge). Atomic like an append: until
    the new meta.json is written the dataset reads as before, and the chunks it no longer lists are
    removed after that commit (or by the next append)."""
    path = Path(path)
    with _locked(path):
        meta = read_versioned_json(path / "meta.json", FORMAT_VERSION, DatasetError)
        _check_meta(meta, path / "meta.json")
        if len(meta["chunks"]) > 1:
            parts = [_read_chunk(path / "chunks" / name, meta, mmap=False) for name in meta["chunks"]]
            merged = EpisodeDataset.concatenate(parts, source_path=str(path))
            del parts
            name = _commit_chunk(path, meta, merged, [], num_episodes=merged.num_episodes, num_steps=merged.num_steps)
            _remove_orphans(path / "chunks", [name])  # the merged chunks, now unlisted
    return EpisodeStore.open(path)


def _commit_chunk(path: Path, meta: dict, ds: EpisodeDataset, kept: list[str], pause: bool = False, **updates) -> str:
    """Write `ds` as the dataset's next chunk (a temporary folder, fsynced, renamed into chunks/), then
    replace meta.json, the commit point, listing the chunks `kept` and the new one, with `updates` to its
    other fields. The caller holds the dataset's lock; `meta` is its committed index. Returns the chunk's
    name. A crash before the commit leaves the dataset as it was (the new folder is an orphan)."""
    chunks_dir = path / "chunks"
    _remove_orphans(chunks_dir, meta["chunks"])
    name = f"{max(int(c) for c in meta['chunks']) + 1:06d}"
    tmp = make_temp_dir(f".{name}.tmp-", chunks_dir)
    shutil.rmtree(tmp)
    try:
        _write_chunk(tmp, ds)
        os.replace(tmp, chunks_dir / name)
        if pause:
            _pause_for_tests()
        atomic_write_text(path / "meta.json", json.dumps(dict(meta, chunks=[*kept, name], **updates), indent=1))  # the commit point
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return name


def _make_room_for_maps(path: Path, maps: int) -> None:
    """Raise this process's open-file limit (soft, up to the hard limit) for `maps` open files (memory maps
    hold theirs while they live), or refuse with the fix."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = maps + 256  # and room for everything else
    if need <= soft:
        return
    if hard == resource.RLIM_INFINITY or need <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else max(need, min(hard, 4 * soft)), hard))
        return
    raise DatasetError(
        f"{path}: its chunks need about {maps} open files (memory maps), above this process's limit of {hard} (ulimit -n); "
        f"merge them: `qtransformer compact {path}`"
    )


def _remove_orphans(chunks_dir: Path, committed: list[str]) -> None:
    """Remove chunk folders meta.json does not list: left by a crashed append or replaced by a compaction; nothing else."""
    for orphan in set(os.listdir(chunks_dir)) - set(committed):
        if _CHUNK_NAME.fullmatch(orphan) or _TMP_CHUNK_NAME.fullmatch(orphan):
            shutil.rmtree(chunks_dir / orphan, ignore_errors=True)


def _committed(path: Path) -> EpisodeStore:
    """The dataset's committed index, meta.json checked, without opening its chunks (what an append needs);
    a meta.json without episode and step counts (written by hand) opens fully."""
    meta_path = Path(path) / "meta.json"
    meta = read_versioned_json(meta_path, FORMAT_VERSION, DatasetError)
    _check_meta(meta, meta_path)
    counts = [meta.get(k) for k in ("num_episodes", "num_steps")]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts) or not meta["chunks"]:
        return EpisodeStore.open(path)
    return EpisodeStore(Path(path), meta, [])


def _pause_for_tests() -> None:
    pause = os.environ.get(_PAUSE_ENV)
    if pause:
        Path(pause).touch()
        time.sleep(600)


def _check_new_episodes(ds: EpisodeDataset) -> None:
    ds.validate()
    for key in ds.images:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
            raise DatasetError(f"field 'images/{key}': image keys name files; use letters, digits, '_', '-' or '.'")


def _new_meta(ds: EpisodeDataset) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "env_id": ds.env_id,
        "action_low": ds.action_low.tolist(),
        "action_high": ds.action_high.tolist(),
        "task_names": ds.task_names,
        "obs_dim": ds.obs_dim,
        "action_dim": ds.action_dim,
        "image_shapes": {k: list(v) for k, v in ds.image_shapes.items()},
        "chunks": ["000000"],
        "num_episodes": ds.num_episodes,
        "num_steps": ds.num_steps,
    }


def check_can_write(path, flag: str = "--out", append: bool = False) -> None:
    """Refuse, before any episode is made, a dataset path that `create` (or, with `append`,
    append_episodes) would refuse: a file, a folder that is no dataset, an unwritable place."""
    from ..fileio import check_output_dir

    path = Path(path)
    check_output_dir(path, flag)
    if (path / "meta.json").exists():
        if append:
            for p in (path, path / "chunks", path / "meta.json"):
                if not os.access(p, os.W_OK):
                    raise DatasetError(f"{p}: not writable (permissions or a read-only file system); {flag} a dataset you may write to, or a new folder")
        elif not os.access(path.parent, os.W_OK):
            raise DatasetError(f"{path.parent}: not writable (permissions or a read-only file system); pass another {flag}")
    elif append:
        _refuse_foreign_folder(path)
    elif path.exists():
        raise DatasetError(f"{path}: exists and is not a dataset folder; choose another output folder (nothing was written)")


def _refuse_foreign_folder(path: Path) -> None:
    """A folder that a new dataset may be created in: absent, empty, or left by a creation that crashed
    before its commit (a lock and uncommitted chunks only)."""
    if not path.exists():
        return
    if path.is_dir():
        chunks = path / "chunks"
        left = {p.name for p in path.iterdir()} - {".lock", "chunks"}
        left = {n for n in left if not n.startswith(".meta.json.tmp-")}
        foreign_chunks = chunks.exists() and (not chunks.is_dir() or any(
            not (_CHUNK_NAME.fullmatch(n) or _TMP_CHUNK_NAME.fullmatch(n)) for n in os.listdir(chunks)))
        if not left and not foreign_chunks:
            return
    raise DatasetError(f"{path}: exists and is not a dataset folder (no meta.json); choose another output folder (nothing was written)")


def append_episodes(path, ds: EpisodeDataset, reopen: bool = True) -> Optional[EpisodeStore]:
    """Append to the dataset at `path`, creating it when it does not exist yet; returns the re-opened
    store (None with reopen=False: the append then reads only meta.json, however many chunks there are).

    Safe to call from several processes at once, also on a dataset that does not exist yet: the
    creation takes the same lock as appends, so every caller's episodes end up in the dataset."""
    path = Path(path)
    if (path / "meta.json").exists():
        _check_new_episodes(ds)
        with _locked(path):
            _committed(path)._append_locked(ds)
        return EpisodeStore.open(path) if reopen else None
    _check_new_episodes(ds)
    _refuse_foreign_folder(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise DatasetError(f"{path}: exists and is not a dataset folder; choose another output folder (nothing was written)") from exc
    with _locked(path):
        if (path / "meta.json").exists():  # another process created it while we waited for the lock
            _committed(path)._append_locked(ds)
        else:
            _refuse_foreign_folder(path)
            chunks_dir = path / "chunks"
            if chunks_dir.exists():
                shutil.rmtree(chunks_dir)  # uncommitted chunks of a creation that crashed
            chunks_dir.mkdir()
            tmp = make_temp_dir(".000000.tmp-", chunks_dir)
            shutil.rmtree(tmp)
            try:
                _write_chunk(tmp, ds)
                os.replace(tmp, chunks_dir / "000000")
                atomic_write_text(path / "meta.json", json.dumps(_new_meta(ds), indent=1))  # the commit point
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp)
    return EpisodeStore.open(path) if reopen else None
