"""Training transitions and the batch sampler.

`build_transitions` computes, once per dataset, every per-step quantity the TD targets need (bins,
n-step reward/discount/bootstrap, the bootstrap step, the Monte-Carlo return, task, source); these
are small. Observations stay where they are (memory maps for a dataset on disk) and are gathered
row by row for each batch, a `Batch` (data/batch.py).

Batch i is a pure function of (seed, i): its indices come from numpy's PCG64 seeded with [seed, i].
So the sampler's whole state is the number of batches drawn, a background thread can prepare the
next batches without changing them, and a resumed run draws exactly the batches it would have.

Under torchrun (distributed.py) each of W processes draws the same global indices of batch i and
gathers only its shard, rows rank, rank + W, ... (B / W of them): a pure function of (seed, rank, i),
and the W shards together are the single-process batch.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Optional, Union

import numpy as np
import torch

from ..actions import ActionDiscretizer
from .batch import Batch, concat_batches
from .dataset import EpisodeDataset
from .returns import chunk_actions, n_step_returns, returns_to_go

SMALL_KEYS = ("bins", "reward", "discount", "bootstrap", "mc_return", "task")
OPTIONAL_KEYS = ("imitate",)  # per-step values a learner option adds to the transitions (see imitation_mask)


class RowSource:
    """Rows of several arrays (chunks) addressed by one global index; gathers only the rows asked for.

    Arrays memory-mapped from .npy files are read row by row with pread, not through the mapping: the
    rows pass through the page cache but never become resident in this process, so sampling a dataset
    far larger than RAM keeps the process small."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self._fds: dict[int, int] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _rows(self, c: int, rows: np.ndarray) -> np.ndarray:
        part = self.parts[c]
        if not isinstance(part, np.memmap) or part.filename is None:
            return np.asarray(part[rows])
        if c not in self._fds:
            self._fds[c] = os.open(part.filename, os.O_RDONLY)
        out = np.empty((len(rows), *part.shape[1:]), dtype=part.dtype)
        flat = out.reshape(len(rows), -1).view(np.uint8)  # (n, row bytes)
        row_bytes = flat.shape[1]
        fd, base = self._fds[c], part.offset
        for j, r in enumerate(rows.tolist()):
            os.preadv(fd, [flat[j]], base + r * row_bytes)
        return out

    def gather(self, idx: np.ndarray) -> np.ndarray:
        if len(self.parts) == 1:
            return self._rows(0, idx)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        out = np.empty((len(idx), *self.parts[0].shape[1:]), dtype=self.parts[0].dtype)
        for c in np.unique(which):
            m = which == c
            out[m] = self._rows(int(c), idx[m] - self.offsets[c])
        return out

    def __del__(self):
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass


def build_transitions(data, discretizer: ActionDiscretizer, gamma: float, n_step: int, action_chunk: int = 1) -> dict:
    """Per step: bins, n-step reward/discount/bootstrap, next_index, mc_return, task, source; plus the
    observations and next observations as RowSources. `data` is an EpisodeDataset or an EpisodeStore.

    action_chunk h > 1: step t's action is the chunk a_t .. a_{t+h-1} (data/returns.py chunk_actions), its
    bins (h x d,) step-major, and the backup reaches h x n_step steps ahead; `discretizer` then has h x d
    dimensions (the data's bounds tiled h times). The Monte-Carlo return stays per step."""
    chunks: list[EpisodeDataset] = list(getattr(data, "chunks", [data]))
    h = int(action_chunk)
    if discretizer.action_dim != h * chunks[0].action_dim:
        raise ValueError(f"the discretizer has {discretizer.action_dim} dimensions; action chunks of {h} x {chunks[0].action_dim} need {h * chunks[0].action_dim}")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (*SMALL_KEYS, "next_index", "source", "successful")}
    labels = sorted({s for c in chunks for s in c.episode_source})
    offset = 0
    for c in chunks:
        nstep = n_step_returns(c.rewards, c.terminals, c.episode_starts, gamma, n_step * h)  # terminal wins over timeout
        parts["bins"].append(discretizer.encode(chunk_actions(c.actions, c.episode_starts, h)).astype(np.int64))  # (N, h*d)
        parts["reward"].append(nstep["reward"])
        parts["discount"].append(nstep["discount"])
        parts["bootstrap"].append(nstep["bootstrap"])
        parts["next_index"].append(nstep["next_index"] + offset)
        parts["mc_return"].append(returns_to_go(c.rewards, c.episode_starts, gamma))
        parts["task"].append(c.step_task())
        source_ids = np.asarray([labels.index(s) for s in c.episode_source], dtype=np.int64)
        parts["source"].append(np.repeat(source_ids, np.diff(c.episode_starts)))
        parts["successful"].append(np.repeat(c.episode_success(), np.diff(c.episode_starts)))
        offset += c.num_steps
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["source_labels"] = labels
    out["obs"] = RowSource([c.observations for c in chunks])
    out["next_observations"] = RowSource([c.next_observations for c in chunks])
    out.update(_image_rows(chunks))
    return out


def imitation_mask(transitions: dict, source: str) -> np.ndarray:
    """Per step 1.0 where the imitation head learns (source 'all', 'successful', or a source label), else 0.0."""
    if source == "all":
        return np.ones(len(transitions["source"]), np.float32)
    if source == "successful":
        mask = np.asarray(transitions["successful"], dtype=bool)
    else:
        labels = transitions["source_labels"]
        if source not in labels:
            raise ValueError(f"algo.imitation_source: the dataset has no source '{source}'; use all, successful or one of {labels}")
        mask = transitions["source"] == labels.index(source)
    if not mask.any():
        raise ValueError(f"algo.imitation_source: no step of '{source}' in the dataset; use all, or another source")
    return mask.astype(np.float32)


def _image_rows(chunks: list[EpisodeDataset]) -> dict:
    """Per image key one RowSource over [images, final_images] of every chunk, and per step the row of
    its image and of its next image (the next step's image, or the episode's final image)."""
    keys = sorted(chunks[0].images)
    if not keys:
        return {}
    parts: dict[str, list] = {k: [] for k in keys}
    image_row, next_image_row, first_image_row, base = [], [], [], 0
    for c in chunks:
        for k in keys:
            parts[k] += [c.images[k], c.final_images[k]]
        image_row.append(base + np.arange(c.num_steps))
        next_image_row.append(base + c.next_image_rows())
        first_image_row.append(base + np.repeat(c.episode_starts[:-1], np.diff(c.episode_starts)))  # each step's episode start
        base += c.num_steps + c.num_episodes
    return {
        "images": {k: RowSource(v) for k, v in parts.items()},
        "image_row": np.concatenate(image_row),
        "next_image_row": np.concatenate(next_image_row),
        "first_image_row": np.concatenate(first_image_row),
    }


def frame_windows(t: np.ndarray, next_t: np.ndarray, image_row: np.ndarray, next_image_row: np.ndarray, first_image_row: np.ndarray,
                  frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Image rows of the frame windows of steps t (B,) and of their bootstrap states (after steps next_t,
    the same episodes), oldest first: ((B, W), (B, W)). The window of step t is the images of steps
    t-W+1 .. t; that of the state after step j is the images of steps j-W+2 .. j and j's next image (the
    episode's final image after its last step). Rows before the episode's first step are its first
    image (padding, as envs.FrameWindow pads at a reset), so a window never reaches the previous episode."""
    back = np.arange(frames - 1, -1, -1)  # (W,) W-1 .. 0
    first = first_image_row[t][:, None]  # (B, 1)
    now = np.maximum(image_row[t][:, None] - back[None, :], first)  # (B, W)
    before = np.maximum(image_row[next_t][:, None] + 1 - back[None, :-1], first)  # (B, W-1): steps j-W+2 .. j
    nxt = np.concatenate([before, next_image_row[next_t][:, None]], axis=1)  # (B, W)
    return now, nxt


class TransitionSampler:
    """Batches of `batch_size` transitions: uniform over steps, or mixed by source.

    source_mix: {source label: fraction of each batch}, e.g. {"demonstration": 0.5}; each listed source
    gives that share of the batch (uniform over its steps), the rest is uniform over the other steps.
    prefetch: how many batches a background thread prepares ahead (0: none, everything on the caller).
    only_successful: draw only steps of successful episodes (filtered BC; combines with source_mix).
    rank, world_size: this process's shard of every batch, rows rank::world_size (batch_size stays the
    global batch and must be divisible by world_size); the default (0, 1) is the whole batch.
    negative_rate, condition_groups: multi-task negative relabelling (`relabel_negatives`): the last
    round(negative_rate x B) rows of every batch are steps drawn uniformly over the dataset whose
    conditioning id (`task`: a task id, or a language model's instruction id) is replaced by one of
    another group (condition_groups (I,): the task of each conditioning id), with reward and Monte-Carlo
    return 0 and the step's own discount and bootstrap flag (a terminal stays a terminal).
    frames: W > 1 gives each camera's frame window (B, W, H, W, C) at s_t and at s_{t+m} (frame_windows).
    """

    def __init__(
        self,
        transitions: dict,
        batch_size: int,
        device: Union[str, torch.device],
        seed: int,
        prefetch: int = 0,
        source_mix: Optional[dict[str, float]] = None,
        only_successful: bool = False,
        rank: int = 0,
        world_size: int = 1,
        negative_rate: float = 0.0,
        condition_groups: Optional[np.ndarray] = None,
        frames: int = 1,
    ):
        if batch_size % world_size != 0 or not 0 <= rank < world_size:
            raise ValueError(f"batch_size {batch_size} must split into {world_size} equal shards and rank {rank} lie in [0, {world_size})")
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.small = {k: torch.as_tensor(transitions[k]) for k in (*SMALL_KEYS, *OPTIONAL_KEYS) if k in transitions}
        self.next_index = transitions["next_index"]
        self.obs = _rows(transitions["obs"])
        self.next_obs = _rows(transitions["next_observations"])
        self.images = transitions.get("images", {})
        self.image_row, self.next_image_row = transitions.get("image_row"), transitions.get("next_image_row")
        self.first_image_row, self.frames = transitions.get("first_image_row"), frames
        self.size = len(self.next_index)
        self.batch_size, self.seed, self.prefetch = batch_size, seed, prefetch
        allowed = None
        if only_successful:
            allowed = np.asarray(transitions["successful"], dtype=bool)
            if not allowed.any():
                raise ValueError("only_successful: the dataset holds no successful episode")
        self.pools = _mix_pools(transitions, source_mix or {}, batch_size, allowed)
        self.num_negatives = int(round(negative_rate * batch_size))
        self.others = None
        if self.num_negatives > 0:
            groups = np.asarray(condition_groups if condition_groups is not None else np.arange(int(transitions["task"].max()) + 1))
            self.others = [np.flatnonzero(groups != g) for g in groups]  # per conditioning id: the ids of the other groups
            if any(len(o) == 0 for o in self.others):
                raise ValueError("negative relabelling needs episodes of at least two tasks: the dataset has one (drop --negative-rate)")
        self.batches_drawn = 0
        self._queue: Optional[queue.Queue] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- the batches ------------------------------------------------------------------------------
    def indices(self, i: int) -> np.ndarray:
        """The step indices of global batch i, (B,), the same on every rank."""
        rng = np.random.default_rng([self.seed, i])
        if not self.pools:
            return rng.integers(0, self.size, self.batch_size)
        return np.concatenate([pool[rng.integers(0, len(pool), n)] for pool, n in self.pools])

    def make_batch(self, i: int) -> Batch:
        """This rank's shard of batch i (the whole batch in a single process), on the CPU."""
        idx = self.indices(i)  # (B,)
        negative = np.zeros(self.batch_size, bool)
        labels = None
        if self.num_negatives > 0:  # the batch's last rows: uniform steps, relabelled (a pure function of (seed, i))
            idx, negative, labels = relabel_negatives(idx, self.small["task"].numpy(), self.others, self.num_negatives,
                                                      np.random.default_rng([self.seed, i, 1]))
        idx, negative = idx[self.rank :: self.world_size], negative[self.rank :: self.world_size]  # (B / W,)
        small = {k: v[idx] for k, v in self.small.items()}  # each (B,) or (B, d)
        if labels is not None and negative.any():
            neg = torch.from_numpy(negative)
            small["task"][neg] = torch.from_numpy(labels[self.rank :: self.world_size][negative])
            for k in ("reward", "mc_return", "imitate"):  # a relabelled step earns nothing and teaches the imitation head nothing
                if k in small:
                    small[k][neg] = 0
        images = next_images = None
        if self.images and self.frames > 1:  # windows of W frames (frame_windows), gathered row by row
            now, nxt = frame_windows(idx, self.next_index[idx], self.image_row, self.next_image_row, self.first_image_row, self.frames)

            def windows(rows, src):
                return torch.from_numpy(src.gather(rows.reshape(-1))).unflatten(0, rows.shape)  # (B, W, H, W, C) uint8

            images = {k: windows(now, src) for k, src in self.images.items()}
            next_images = {k: windows(nxt, src) for k, src in self.images.items()}  # at s_{t+m}
        elif self.images:
            rows, next_rows = self.image_row[idx], self.next_image_row[self.next_index[idx]]
            images = {k: torch.from_numpy(src.gather(rows)) for k, src in self.images.items()}  # (B, H, W, C) uint8
            next_images = {k: torch.from_numpy(src.gather(next_rows)) for k, src in self.images.items()}  # at s_{t+m}
        return Batch(
            obs=torch.from_numpy(self.obs.gather(idx)),  # (B, obs_dim)
            next_obs=torch.from_numpy(self.next_obs.gather(self.next_index[idx])),  # (B, obs_dim) at s_{t+m}
            images=images,
            next_images=next_images,
            **small,
        )

    def sample(self) -> Batch:
        """The next batch, on the sampler's device."""
        if self.prefetch > 0:
            if self._thread is None:
                self._start()
            batch = self._queue.get()
            if isinstance(batch, BaseException):
                raise batch
        else:
            batch = self._prepared(self.batches_drawn)
        self.batches_drawn += 1
        return batch.to(self.device, non_blocking=True)

    def _prepared(self, i: int) -> Batch:
        """Batch i on the CPU, in pinned memory when it goes to a GPU (the copy is then asynchronous)."""
        batch = self.make_batch(i)
        return batch.pin_memory() if self.device.type == "cuda" else batch

    # -- state (for exact resume) -----------------------------------------------------------------
    def state(self) -> int:
        return self.batches_drawn

    def set_state(self, batches_drawn: int) -> None:
        self.close()
        self.batches_drawn = int(batches_drawn)

    # -- background preparation -------------------------------------------------------------------
    def _start(self) -> None:
        self._stop.clear()
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._thread = threading.Thread(target=self._work, args=(self.batches_drawn,), daemon=True, name="qt-prefetch")
        self._thread.start()

    def _work(self, i: int) -> None:
        try:
            while not self._stop.is_set():
                batch = self._prepared(i)
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                i += 1
        except BaseException as exc:  # noqa: BLE001 - hand the error to the training loop
            self._queue.put(exc)

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._queue = None


def relabel_negatives(idx: np.ndarray, task: np.ndarray, others: list, n: int, rng: np.random.Generator):
    """Multi-task negative relabelling of a batch's last n rows: (B,) step indices, (N,) each step's
    conditioning id, per id the ids of the other groups -> (indices with the last n rows drawn uniformly
    over all steps, (B,) bool marking them, (B,) int64 their new conditioning ids, uniform among `others`
    of the step's own id; the other rows' entries unused)."""
    idx = idx.copy()
    B = len(idx)
    idx[B - n :] = rng.integers(0, len(task), n)
    negative = np.zeros(B, bool)
    negative[B - n :] = True
    labels = np.zeros(B, np.int64)
    for j in range(B - n, B):
        choices = others[int(task[idx[j]])]
        labels[j] = choices[rng.integers(0, len(choices))]
    return idx, negative, labels


def _rows(x) -> RowSource:
    return x if isinstance(x, RowSource) else RowSource([np.asarray(x)])


def _mix_pools(
    transitions: dict, source_mix: dict[str, float], batch_size: int, allowed: Optional[np.ndarray] = None
) -> list[tuple[np.ndarray, int]]:
    """[(step indices, count per batch)] for a mixed or filtered batch; [] for uniform sampling over all steps.
    `allowed` (N,) bool keeps only those steps in every pool."""
    if allowed is not None and not source_mix:
        return [(np.flatnonzero(allowed), batch_size)]
    if not source_mix:
        return []
    labels = transitions["source_labels"]
    source = transitions["source"]
    unknown = sorted(set(source_mix) - set(labels))
    if unknown:
        raise ValueError(f"source_mix names sources {unknown} that the dataset does not have; it has {labels}")
    if any(f < 0 for f in source_mix.values()) or sum(source_mix.values()) > 1 + 1e-9:
        raise ValueError(f"source_mix fractions must be >= 0 and add up to at most 1, got {source_mix}")
    keep = np.ones(len(source), bool) if allowed is None else allowed
    pools, used = [], 0
    for name, frac in sorted(source_mix.items()):
        n = int(round(frac * batch_size))
        pool = np.flatnonzero((source == labels.index(name)) & keep)
        if n > 0 and len(pool) == 0:
            raise ValueError(f"source_mix: no step of source '{name}' is left to sample (only_successful?)")
        pools.append((pool, n))
        used += n
    rest = np.flatnonzero(~np.isin(source, [labels.index(n) for n in source_mix]) & keep)
    if batch_size - used > 0:
        if len(rest) == 0:
            rest = np.flatnonzero(keep)
        pools.append((rest, batch_size - used))
    return [(p, n) for p, n in pools if n > 0]


class MixedSampler:
    """Batches that mix offline and online transitions at a set ratio (RLPD's symmetric sampling at 0.5):
    of every batch of B, round(online_fraction x B) rows come from the online data and the rest from the
    offline data, each uniform over its steps. While the online data is empty (or without offline data
    at all) the whole batch comes from the side that has data; `ready()` is False while neither has.

    The online transitions grow: `set_online(transitions)` replaces them (rebuilt over every finished
    episode). Batch i is a pure function of (seed, i) and the data at the time: offline rows from
    PCG64([seed, i]), online rows from PCG64([seed + 1, i]). `state()` is the number of batches drawn."""

    def __init__(self, offline: Optional[dict], batch_size: int, device: Union[str, torch.device], seed: int, online_fraction: float,
                 frames: int = 1):
        if not 0.0 <= online_fraction <= 1.0:
            raise ValueError(f"online_fraction must be in [0, 1], got {online_fraction}")
        self.batch_size, self.device, self.seed, self.frames = batch_size, torch.device(device), seed, frames
        self.n_online = int(round(online_fraction * batch_size)) if offline is not None else batch_size
        part = batch_size - self.n_online
        self.offline_part = TransitionSampler(offline, part, "cpu", seed, frames=frames) if offline is not None and part > 0 else None
        self.offline_all = TransitionSampler(offline, batch_size, "cpu", seed, frames=frames) if offline is not None else None
        self.online_part: Optional[TransitionSampler] = None
        self.online_all: Optional[TransitionSampler] = None
        self.online_steps = 0
        self.batches_drawn = 0

    def set_online(self, transitions: Optional[dict]) -> None:
        """The online transitions from now on (None or none at all: offline rows only)."""
        n = 0 if transitions is None else len(transitions["next_index"])
        self.online_steps = n
        if n == 0:
            self.online_part = self.online_all = None
            return
        self.online_part = TransitionSampler(transitions, self.n_online, "cpu", self.seed + 1, frames=self.frames) if self.n_online > 0 else None
        self.online_all = TransitionSampler(transitions, self.batch_size, "cpu", self.seed + 1, frames=self.frames)

    def ready(self) -> bool:
        return self.offline_all is not None or self.online_steps > 0

    def split(self) -> tuple[int, int]:
        """(offline rows, online rows) of the next batch."""
        if self.online_steps == 0:
            return self.batch_size, 0
        if self.offline_all is None:
            return 0, self.batch_size
        return self.batch_size - self.n_online, self.n_online

    def make_batch(self, i: int) -> Batch:
        n_off, n_on = self.split()
        if n_on == 0:
            return self.offline_all.make_batch(i)
        if n_off == 0:
            return self.online_all.make_batch(i)
        return concat_batches([self.offline_part.make_batch(i), self.online_part.make_batch(i)])  # offline rows first

    def sample(self) -> Batch:
        if not self.ready():
            raise ValueError("no transitions to sample: no offline data and no finished online episode yet")
        batch = self.make_batch(self.batches_drawn)
        self.batches_drawn += 1
        return batch.to(self.device, non_blocking=True)

    def state(self) -> int:
        return self.batches_drawn

    def set_state(self, batches_drawn: int) -> None:
        self.batches_drawn = int(batches_drawn)

    def close(self) -> None:
        pass
