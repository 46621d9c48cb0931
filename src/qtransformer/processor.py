"""The one observation pipeline: a raw environment observation and an instruction -> the model's inputs.

The same rule everywhere (a processor in LeRobot's sense):

    recording     envs/rollout.py     split_observation(obs) -> the state row and camera images a dataset stores
    training      train.py            ObservationProcessor.for_dataset(...), with_instructions(...): the
                                      instruction of every step, embedded once and cached with the dataset
    acting        policy.py           processor.model_inputs(obs, task=, instruction=) for eval, collect and
                                      the Python API
    checkpoint    model/config.json   "processor": these settings; QTPolicy rebuilds the processor from them

An observation is a state vector, or a Dict whose camera entries are uint8 images (H, W, C) and whose
other entries are flattened into the state in sorted key order. A language model (model.language_encoder
not 'none') reads the instruction's embedding (nets/language.py) instead of a task id: its training
instructions' embeddings are a table inside the network (`language_table`), and an instruction it never
saw is embedded on the fly by the same encoder, which config.json names.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .fileio import atomic_write_text
from .nets.language import HASH_DIM, check_encoder_name, make_language_encoder

PROCESSOR_VERSION = 1
LANGUAGE_CACHE = "language_embeddings.json"  # in the dataset folder: {encoder cache key: {text: embedding}}
LANGUAGE_CACHE_VERSION = 1


def split_observation(obs, image_keys: Optional[Sequence[str]] = None, frames: int = 1) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """An observation, one or a batch -> (state (obs_dim,) or (B, obs_dim) float32, {camera: uint8 image}).

    A plain array is all state. In a Dict observation the cameras are `image_keys` (a model's); with None
    (recording one observation into a dataset) they are its uint8 entries of rank 3, and a plain array is
    flattened. Every other entry is flattened into the state in sorted key order. `frames` W > 1: each
    camera entry is a window (W, H, W, C), or (B, W, H, W, C) for a batch (envs.FrameWindow)."""
    if not isinstance(obs, dict):
        state = np.asarray(obs, dtype=np.float32)
        return (state.reshape(-1) if image_keys is None else state), {}
    if image_keys is None:
        image_keys = [k for k in obs if np.asarray(obs[k]).dtype == np.uint8 and np.asarray(obs[k]).ndim == 3]
    missing = [k for k in image_keys if k not in obs]
    if missing:
        raise ValueError(f"observation dict lacks the image keys {missing} this policy reads")
    image_keys = sorted(image_keys)
    state_keys = sorted(k for k in obs if k not in image_keys)
    if image_keys:
        rank = np.asarray(obs[image_keys[0]]).ndim
        if frames > 1 and rank not in (4, 5):
            raise ValueError(f"this policy reads windows of {frames} frames per camera, got '{image_keys[0]}' of rank {rank}: step the "
                             "environment through policy.make_env(env_id) (envs.FrameWindow), which stacks them")
        single = rank == (3 if frames == 1 else 4)  # (H, W, C) or (B, H, W, C); with frames: (W, H, W, C) or (B, W, H, W, C)
    else:
        single = np.asarray(obs[state_keys[0]]).ndim <= 1
    B = 1 if single else np.asarray(obs[(image_keys or state_keys)[0]]).shape[0]
    parts = [np.asarray(obs[k], dtype=np.float32).reshape(B, -1) for k in state_keys]
    state = np.concatenate(parts, axis=1) if parts else np.zeros((B, 0), np.float32)  # (B, obs_dim)
    images = {k: np.asarray(obs[k], dtype=np.uint8) for k in image_keys}  # (H, W, C) or (B, H, W, C)
    return (state[0] if single else state), images


def latest_frames(obs):
    """An observation from envs.FrameWindow -> the same with each window (W, H, W, C) replaced by its newest
    frame: what a dataset records (it stores single frames, and the sampler rebuilds the windows)."""
    if not isinstance(obs, dict):
        return obs
    return {k: (np.asarray(v)[-1] if np.asarray(v).dtype == np.uint8 and np.asarray(v).ndim == 4 else v) for k, v in obs.items()}


@dataclass(frozen=True)
class ModelInputs:
    """What the network's passes read for B observations (nets/qnet.py)."""

    obs: torch.Tensor  # (B, obs_dim) float32, the state; (B, 0) for an image-only model
    images: Optional[dict[str, torch.Tensor]]  # {camera: (B, H, W, C) uint8, or (B, W, H, W, C) windows}, None without cameras
    task: Optional[torch.Tensor]  # (B,) int64 task ids, for a multi-task model without language
    language: Optional[torch.Tensor]  # (B, E) float32 instruction embeddings, for a language model
    single: bool  # one observation, not a batch: outputs drop the batch axis


@dataclass
class ObservationProcessor:
    """The settings that turn observations and instructions into model inputs, saved in config.json."""

    obs_dim: int
    """Length of the state vector (0 for image-only observations)."""
    image_keys: list[str] = field(default_factory=list)
    """Camera entries of a Dict observation, uint8 (H, W, C) each."""
    task_names: list[str] = field(default_factory=lambda: ["default"])
    """The dataset's tasks; a multi-task model without language takes their ids."""
    language_encoder: str = "none"
    """none, hash, minilm or hf:<folder> (nets/language.py)."""
    language_dim: int = 0
    """Width E of the encoder's embeddings (0 without language)."""
    instructions: list[str] = field(default_factory=list)
    """The training instructions, in the order of the rows of the network's language table."""
    task_instructions: dict[str, str] = field(default_factory=dict)
    """Each training task's instruction (its episodes' first), used when only a task is named."""
    frames: int = 1
    """Frames per camera the model reads (model.frames): W > 1 takes windows (W, H, W, C), oldest first,
    which environments give through envs.FrameWindow (QTPolicy.make_env)."""
    _known: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # text -> (E,) embedding
    _encoder: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def uses_language(self) -> bool:
        return self.language_encoder != "none"

    @property
    def uses_task_id(self) -> bool:
        return not self.uses_language and len(self.task_names) > 1

    # -- settings ---------------------------------------------------------------------------------
    @classmethod
    def for_dataset(cls, ds, language_encoder: str = "none", frames: int = 1) -> "ObservationProcessor":
        """The processor for a dataset (an EpisodeStore or EpisodeDataset), before its instructions are read."""
        problem = check_encoder_name(language_encoder)
        if problem is not None:
            raise ValueError(f"model.language_encoder: {problem}")
        dim = 0
        if language_encoder == "hash":
            dim = HASH_DIM
        elif language_encoder != "none":
            dim = make_language_encoder(language_encoder).dim  # reads the folder's config.json only
        return cls(int(ds.obs_dim), sorted(ds.image_shapes), list(ds.task_names), language_encoder, dim, frames=frames if ds.image_shapes else 1)

    def to_dict(self) -> dict:
        return {"format_version": PROCESSOR_VERSION, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}}

    @classmethod
    def from_dict(cls, d: dict, where: str = "config.json") -> "ObservationProcessor":
        def fail(msg: str) -> None:
            raise ValueError(f"{where}: field 'processor' {msg}; the checkpoint is corrupted or from a newer qtransformer")

        def strings(xs) -> bool:
            return isinstance(xs, list) and all(isinstance(x, str) for x in xs)

        if not isinstance(d, dict) or d.get("format_version") != PROCESSOR_VERSION:
            fail(f"must be a mapping with format_version {PROCESSOR_VERSION}")
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(d) - names - {"format_version"})
        if unknown:
            fail(f"has unknown entries {unknown}")
        p = cls(**{k: v for k, v in d.items() if k in names})
        if not (isinstance(p.obs_dim, int) and p.obs_dim >= 0 and isinstance(p.language_dim, int) and p.language_dim >= 0):
            fail("'obs_dim'/'language_dim' must be whole numbers >= 0")
        if not (strings(p.image_keys) and strings(p.task_names) and p.task_names and strings(p.instructions)):
            fail("'image_keys'/'task_names'/'instructions' must be lists of strings")
        if not (isinstance(p.task_instructions, dict) and all(isinstance(v, str) for v in p.task_instructions.values())):
            fail("'task_instructions' must map task names to texts")
        if isinstance(p.frames, bool) or not isinstance(p.frames, int) or p.frames < 1:
            fail("'frames' must be a whole number >= 1")
        if not isinstance(p.language_encoder, str) or check_encoder_name(p.language_encoder) is not None:
            fail(f"'language_encoder': {check_encoder_name(str(p.language_encoder))}")
        return p

    @classmethod
    def for_network(cls, net, meta: Optional[dict] = None) -> "ObservationProcessor":
        """The processor a policy acts through: config.json's "processor", or, for checkpoints from before
        it was saved and networks made in code, the one the network's shape implies (no language)."""
        meta = meta or {}
        if "processor" in meta:
            p = cls.from_dict(meta["processor"])
        else:
            names = list(meta.get("task_names") or [])
            if len(names) != net.num_tasks:
                names = ["default"] if net.num_tasks <= 1 else [f"task {i}" for i in range(net.num_tasks)]
            p = cls(net.obs_dim, list(net.image_keys), names, frames=net.frames)
        found = (p.obs_dim, sorted(p.image_keys), p.language_dim, len(p.instructions) if p.uses_language else 0, p.frames)
        wanted = (net.obs_dim, sorted(net.image_keys), net.language_dim, net.num_instructions, net.frames)
        if found != wanted or (p.uses_task_id and len(p.task_names) != net.num_tasks):
            raise ValueError(
                f"processor settings (obs_dim, image keys, language dim, instructions, frames) {found} disagree with the network's {wanted}; "
                "the checkpoint is corrupted"
            )
        if p.uses_language:
            p.remember(p.instructions, net.language_table.detach().cpu().numpy())
        return p

    # -- instructions -----------------------------------------------------------------------------
    def remember(self, texts: Sequence[str], embeddings: np.ndarray) -> None:
        """Known embeddings (N, E) of `texts`: `embed` returns these without running the encoder."""
        for text, row in zip(texts, np.asarray(embeddings, dtype=np.float32), strict=True):
            self._known[text] = row

    def encoder(self):
        if self._encoder is None:
            self._encoder = make_language_encoder(self.language_encoder)
        return self._encoder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Instruction texts -> (N, E) float32 embeddings: the ones already known (the training instructions),
        the others from the encoder, once each."""
        new = sorted({t for t in texts if t not in self._known})
        if new:
            self.remember(new, self.encoder().encode(new))
        return np.stack([self._known[t] for t in texts]) if texts else np.zeros((0, self.language_dim), np.float32)

    def instruction_for(self, task: Optional[int] = None, instruction: Optional[str] = None) -> Optional[str]:
        """The instruction a language model acts on: `instruction`, else the training instruction of task id
        `task`, else the only task's. None for a model without language (which refuses an instruction)."""
        if not self.uses_language:
            if instruction is not None:
                raise ValueError("this policy was trained without language (model.language_encoder none): it takes no instruction; drop it")
            return None
        if instruction is not None:
            return instruction
        if task is not None:
            if isinstance(task, bool) or not 0 <= int(task) < len(self.task_names):
                raise ValueError(f"task {task}: this policy was trained on the tasks {self.task_names}; pass an id from 0 to {len(self.task_names) - 1}")
            name = self.task_names[int(task)]
            if name in self.task_instructions:
                return self.task_instructions[name]
        if len(self.task_instructions) == 1:
            return next(iter(self.task_instructions.values()))
        raise ValueError(f"this policy is language-conditioned: pass an instruction (trained with {sorted(set(self.instructions))})")

    # -- observations -> model inputs -------------------------------------------------------------
    def model_inputs(
        self, obs, task=None, instruction: Union[None, str, Sequence[str]] = None, device: Union[str, torch.device] = "cpu"
    ) -> ModelInputs:
        """An observation (obs_dim,) or a batch (B, obs_dim), or a Dict of them, with a task id or an
        instruction (one text, or one per row) -> ModelInputs on `device`.

        One observation with a list of N instructions (or N task ids) is read N times, once per instruction
        (the planner's use: which of these is feasible from here): the inputs are a batch of N."""
        images = None
        if isinstance(obs, dict):
            state, found = split_observation(obs, self.image_keys, self.frames)
            images = {k: torch.as_tensor(v, device=device) for k, v in found.items()} or None
        elif self.image_keys:
            raise ValueError(f"this policy reads images {self.image_keys}: pass a dict observation with 'state' and those keys")
        else:
            state = np.asarray(obs, dtype=np.float32)
        single = state.ndim == 1
        obs_t = torch.as_tensor(state, device=device)
        if single:
            n = _conditions(task, instruction)  # N > 1: one observation read once per instruction or task
            obs_t = obs_t.unsqueeze(0).expand(n, -1).contiguous()  # (N, obs_dim)
            images = {k: v.unsqueeze(0).expand(n, *v.shape).contiguous() for k, v in images.items()} if images is not None else None
            single = n == 1 and (instruction is None or isinstance(instruction, str)) and np.ndim(task) == 0
        if obs_t.dim() != 2 or obs_t.shape[1] != self.obs_dim:
            raise ValueError(f"observation must be ({self.obs_dim},) or (batch, {self.obs_dim}); got {tuple(obs_t.shape)}")
        B = obs_t.shape[0]
        task_t, language = None, None
        if self.uses_language:
            if instruction is None and np.ndim(task) > 0 and len(np.asarray(task).reshape(-1)) == B:
                texts = [self.instruction_for(int(t), None) for t in np.asarray(task).reshape(-1)]  # one task per row
            elif isinstance(instruction, str) or instruction is None:
                texts = [self.instruction_for(_one(task, "task"), instruction)] * B
            else:
                texts = [str(t) for t in instruction]
                if len(texts) != B:
                    raise ValueError(f"{len(texts)} instructions for {B} observations; pass one text or one per observation")
            language = torch.as_tensor(self.embed(texts), device=device)  # (B, E)
        else:
            if instruction is not None:
                self.instruction_for(None, "")  # refuses it, saying why
            if self.uses_task_id and task is None:
                raise ValueError(f"this policy was trained on {len(self.task_names)} tasks ({self.task_names}); pass task= with a task id")
            if task is not None:
                task_t = torch.as_tensor(np.asarray(task), device=device).long().reshape(-1)
                task_t = task_t.expand(B) if task_t.numel() == 1 else task_t  # (B,)
                if task_t.numel() != B:
                    raise ValueError(f"{task_t.numel()} task ids for {B} observations; pass one id or one per observation")
        return ModelInputs(obs_t, images, task_t, language, single)


def _conditions(task, instruction) -> int:
    """How many instructions (or task ids) one observation is asked about: 1 for one text or id."""
    if instruction is not None and not isinstance(instruction, str):
        n = len(instruction)
        if n == 0:
            raise ValueError("instruction: an empty list; pass one text or a list of texts")
        return n
    if instruction is None and task is not None and np.ndim(task) > 0:
        return max(1, len(np.asarray(task).reshape(-1)))
    return 1


def _one(task, what: str) -> Optional[int]:
    """A single task id (or None); a language model takes one task per call."""
    if task is None:
        return None
    arr = np.asarray(task).reshape(-1)
    if len(set(arr.tolist())) != 1:
        raise ValueError(f"a language-conditioned policy takes one {what} per call or one per observation, or instruction= with one text per observation")
    return int(arr[0])


# -- training: the instruction of every step, embedded once and cached with the dataset ----------------
def episode_instructions(ds) -> list[str]:
    """Each episode's instruction over all chunks of a dataset (EpisodeStore or EpisodeDataset): its stored
    text (episodes.json); for episodes stored without one, the instruction of another episode of its task,
    else the task's name."""
    chunks = list(getattr(ds, "chunks", [ds]))
    by_task: dict[int, str] = {}
    for c in chunks:
        for t, text in zip(c.episode_task.tolist(), c.episode_instruction, strict=False):
            by_task.setdefault(int(t), text)
    names = list(ds.task_names)
    out = []
    for c in chunks:
        texts = c.episode_instruction or [by_task.get(int(t), names[int(t)]) for t in c.episode_task.tolist()]
        out += list(texts)
    return out


def with_instructions(processor: ObservationProcessor, ds) -> tuple[ObservationProcessor, np.ndarray, np.ndarray]:
    """For a language model: (the processor holding the training instructions and each task's, their
    embeddings (I, E) float32, the instruction id of every step (N,) int64, an index into them)."""
    per_episode = episode_instructions(ds)
    instructions = list(dict.fromkeys(per_episode))  # distinct, in order of first appearance
    row = {text: i for i, text in enumerate(instructions)}
    tasks = np.concatenate([c.episode_task for c in getattr(ds, "chunks", [ds])])
    task_instructions: dict[str, str] = {}
    for t, text in zip(tasks.tolist(), per_episode, strict=True):
        task_instructions.setdefault(ds.task_names[int(t)], text)
    lengths = np.concatenate([np.diff(c.episode_starts) for c in getattr(ds, "chunks", [ds])])
    step_ids = np.repeat(np.asarray([row[t] for t in per_episode], dtype=np.int64), lengths)  # (N,)
    new = dataclasses.replace(processor, instructions=instructions, task_instructions=task_instructions)
    folder = getattr(ds, "path", None)
    table = cached_embeddings(new.encoder(), instructions, folder) if folder is not None else new.encoder().encode(instructions)
    new.remember(instructions, table)
    return new, table, step_ids


def cached_embeddings(encoder, texts: Sequence[str], folder: Union[str, Path]) -> np.ndarray:
    """(N, E) embeddings of `texts`, read from DATASET/language_embeddings.json where present, computed
    (once per distinct text) and added to it otherwise.

    The file holds {encoder cache key: {"dim": E, "embeddings": {text: [E floats]}}}. It is updated under
    the dataset's lock (the one appends hold), re-read inside it, and replaced atomically, so concurrent
    runs never drop each other's entries; a file that cannot be parsed is moved aside, not overwritten.
    A dataset folder that cannot be written is left alone (the embeddings are only not cached)."""
    path = Path(folder) / LANGUAGE_CACHE
    found = (_read_cache(path) or {}).get(encoder.cache_key, {}).get("embeddings", {})
    known = {t: np.asarray(v, np.float32) for t, v in found.items() if _valid_row(v, encoder.dim)}
    missing = sorted({t for t in texts if t not in known})
    if missing:
        rows = encoder.encode(missing)
        known.update(zip(missing, rows, strict=True))
        try:
            _add_to_cache(path, encoder, dict(zip(missing, rows, strict=True)))
        except OSError:
            pass  # a read-only dataset: the embeddings are computed, just not kept
    return np.stack([known[t] for t in texts]).astype(np.float32) if texts else np.zeros((0, encoder.dim), np.float32)


def _valid_row(v, dim: int) -> bool:
    return isinstance(v, list) and len(v) == dim and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)


def _read_cache(path: Path) -> Optional[dict]:
    """{cache key: entry}; {} when there is no file, None when it cannot be parsed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("format_version") != LANGUAGE_CACHE_VERSION or not isinstance(data.get("encoders"), dict):
        return None
    return {k: v for k, v in data["encoders"].items() if isinstance(v, dict) and isinstance(v.get("embeddings"), dict)}


def _add_to_cache(path: Path, encoder, rows: dict[str, np.ndarray]) -> None:
    with open(path.parent / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one writer at a time, like the dataset's appends
        try:
            encoders = _read_cache(path)
            if encoders is None:  # keep what we cannot parse, beside the new file
                os.replace(path, path.with_name(f"{path.name}.unreadable-{os.getpid()}"))
                encoders = {}
            entry = encoders.setdefault(encoder.cache_key, {"encoder": encoder.name, "dim": encoder.dim, "embeddings": {}})
            entry["embeddings"].update({t: [float(x) for x in r] for t, r in rows.items()})
            atomic_write_text(path, json.dumps({"format_version": LANGUAGE_CACHE_VERSION, "encoders": encoders}, sort_keys=True))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
