"""The OGBench manipulation dataset recipe: raw oracle episodes (cached, made by workers), relabelled
for one single task into our dataset format. See docs/ogbench.md for every choice.

Two stages:

1. `generate_raw`: raw episodes exactly as OGBench records them (every state's observation, qpos, qvel
   and button states, and the oracle's actions), independent of the task. Raw episode i is seeded by
   (seed, i) alone, so the result is the same for any number of workers, and a cache folder holds
   blocks of episodes (`episodes_<start>-<end>.npz`, written atomically): an interrupted or repeated
   run only makes the blocks that are missing, and a larger --episodes reuses the smaller run's blocks.
2. `relabel_episode` / `make_ogbench_dataset`: per task, the single-task environment's own success
   check on every recorded state; transition (s_t, a_t, s_t+1) gets reward 1 and a terminal when
   s_t solves every subtask (OGBench >= 1.2 judges s, not s'), else 0; the raw episode is split after
   each terminal, and its last piece ends in a timeout. The count of subtasks solved at s_t is kept per
   stored step in DATASET/ogbench/steps.npz (our format has no extra per-step fields).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..data import EpisodeDataset, EpisodeStore
from ..fileio import atomic_write_text
from .ogbench import (
    DATASET_TYPES,
    ENVS,
    EPISODE_LENGTH,
    NUM_TASKS,
    TaskJudge,
    episode_seed,
    generate_episode,
    make_collection_env,
    ogbench_env_id,
)

BLOCK_EPISODES = 50  # raw episodes per cache block (about 50k transitions at the full episode length)
CACHE_FORMAT = "qtransformer-ogbench-raw-1"


@dataclass(frozen=True)
class RawRecipe:
    env: str
    dataset: str
    seed: int = 0
    episode_length: int = EPISODE_LENGTH

    def check(self) -> None:
        if self.env not in ENVS:
            raise ValueError(f"unknown OGBench environment '{self.env}'; choose one of {', '.join(ENVS)}")
        if self.dataset not in DATASET_TYPES:
            raise ValueError(f"unknown OGBench dataset '{self.dataset}'; choose one of {', '.join(DATASET_TYPES)}")
        if self.episode_length < 2:
            raise ValueError(f"episode_length must be >= 2 (states per episode), got {self.episode_length}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @property
    def name(self) -> str:
        return f"{self.env}-{self.dataset}-len{self.episode_length}-seed{self.seed}"


def default_cache_root() -> Path:
    base = os.environ.get("QTRANSFORMER_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "qtransformer")
    return Path(base) / "ogbench"


def _blocks(episodes: int) -> list[tuple[int, int]]:
    return [(s, min(s + BLOCK_EPISODES, episodes)) for s in range(0, episodes, BLOCK_EPISODES)]


def _block_path(cache: Path, start: int, end: int) -> Path:
    return cache / f"episodes_{start:06d}-{end:06d}.npz"


def _check_cache(cache: Path, recipe: RawRecipe) -> None:
    meta_path = cache / "meta.json"
    from importlib.metadata import version

    import ogbench  # noqa: F401 - the version goes into the cache's meta

    want = {"format": CACHE_FORMAT, "recipe": asdict(recipe), "ogbench": version("ogbench")}
    if meta_path.exists():
        have = json.loads(meta_path.read_text())
        if have != want:
            raise ValueError(f"{cache}: a raw-episode cache for {have.get('recipe')} (ogbench {have.get('ogbench')}), not {want['recipe']} "
                             f"(ogbench {want['ogbench']}); pass another --cache folder")
        return
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_text(meta_path, json.dumps(want, indent=1))


# -- worker processes: one collection environment each ----------------------------------------------

_WORKER: dict = {}


def _init_worker(env: str, episode_length: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER[(env, episode_length)] = make_collection_env(env, episode_length)


def _episode(recipe: RawRecipe, index: int) -> dict:
    key = (recipe.env, recipe.episode_length)
    if key not in _WORKER:  # one environment per process and (env, length), reused across episodes
        _init_worker(*key)
    ep = generate_episode(recipe.env, recipe.dataset, episode_seed(recipe.seed, index), env=_WORKER[key], episode_length=recipe.episode_length)
    ep["index"] = index
    return ep


def _save_block(path: Path, eps: list[dict]) -> None:
    arrays = {k: np.stack([e[k] for e in eps]) for k in ("observations", "actions", "qpos", "qvel")}
    if "button_states" in eps[0]:
        arrays["button_states"] = np.stack([e["button_states"] for e in eps])
    arrays["retries"] = np.asarray([e["retries"] for e in eps], dtype=np.int64)
    arrays["index"] = np.asarray([e["index"] for e in eps], dtype=np.int64)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_block(path: Path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def generate_raw(recipe: RawRecipe, episodes: int, cache: Path, workers: int = 1, progress: bool = True) -> dict:
    """Make the raw episodes 0..episodes-1 that `cache` lacks. Returns {"blocks": paths in episode order,
    "generated_steps", "seconds"} (the time and env steps of the episodes made now)."""
    from tqdm import tqdm

    recipe.check()
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    cache = Path(cache)
    _check_cache(cache, recipe)
    blocks = _blocks(episodes)
    missing = [(s, e) for s, e in blocks if not _block_path(cache, s, e).exists()]
    todo = [i for s, e in missing for i in range(s, e)]
    steps = (recipe.episode_length - 1) * len(todo)
    t0 = time.perf_counter()
    if todo:
        bar = tqdm(total=len(todo), desc=f"{recipe.env} {recipe.dataset} episodes", unit="ep", disable=not progress)
        pending: dict[int, dict] = {}

        def take(ep: dict) -> None:
            pending[ep["index"]] = ep
            bar.update(1)
            bar.set_postfix_str(f"{(recipe.episode_length - 1) * bar.n / max(time.perf_counter() - t0, 1e-9):.0f} steps/s")
            for s, e in missing:
                if all(i in pending for i in range(s, e)):
                    _save_block(_block_path(cache, s, e), [pending.pop(i) for i in range(s, e)])

        if workers > 1:
            from qtransformer.workers import process_pool

            with process_pool(min(workers, len(todo)), initializer=_init_worker, initargs=(recipe.env, recipe.episode_length)) as pool:
                for ep in pool.map(_episode, [recipe] * len(todo), todo):
                    take(ep)
        else:
            for i in todo:
                take(_episode(recipe, i))
        bar.close()
    return {"blocks": [_block_path(cache, s, e) for s, e in blocks], "generated_steps": steps, "seconds": time.perf_counter() - t0}


# -- relabelling for one task ------------------------------------------------------------------------


def relabel_episode(raw: dict, successes: np.ndarray, source: str) -> tuple[list[dict], np.ndarray]:
    """One raw episode (L states) and its (L, subtasks) success matrix -> our episodes (pieces ending at
    each success terminal, the last one in a timeout) and the subtasks solved at each kept step's s_t.

    Transition t = (s_t, a_t, s_t+1), t < L-1: reward = terminal = every subtask solved at s_t."""
    obs, act = raw["observations"], raw["actions"]
    n = len(act)
    done = successes[:n].all(axis=1)
    solved = successes[:n].sum(axis=1).astype(np.int8)
    cuts = list(np.nonzero(done)[0] + 1)
    if not cuts or cuts[-1] != n:
        cuts.append(n)
    pieces, start = [], 0
    for end in cuts:
        terminal = bool(done[end - 1])
        k = end - start
        pieces.append({
            "observations": obs[start:end], "next_observations": obs[start + 1:end + 1], "actions": act[start:end],
            "rewards": done[start:end].astype(np.float32),
            "terminals": np.eye(1, k, k - 1, dtype=bool)[0] if terminal else np.zeros(k, bool),
            "timeouts": np.zeros(k, bool) if terminal else np.eye(1, k, k - 1, dtype=bool)[0],
            "source": source, "task": 0,
        })
        start = end
    return pieces, solved


def raw_successes(judge: TaskJudge, raw: dict) -> np.ndarray:
    return judge.successes(raw["qpos"], raw["qvel"], raw.get("button_states"))


def make_ogbench_dataset(
    env: str, dataset: str, task: int, episodes: int, out: Path, seed: int = 0, workers: int = 1,
    episode_length: int = EPISODE_LENGTH, cache: Optional[Path] = None, progress: bool = True,
) -> dict:
    """Generate (or reuse from `cache`) `episodes` raw episodes and write them, relabelled for `task`,
    to the dataset folder `out` (replaced if it holds a dataset). Returns the summary (see summary_table)."""
    from tqdm import tqdm

    recipe = RawRecipe(env, dataset, seed, episode_length)
    recipe.check()
    if not 1 <= task <= NUM_TASKS:
        raise ValueError(f"task must be 1..{NUM_TASKS}, got {task}")
    cache = Path(cache) if cache is not None else default_cache_root() / recipe.name
    raw_info = generate_raw(recipe, episodes, cache, workers=workers, progress=progress)
    judge = TaskJudge(env, task)
    env_id = ogbench_env_id(env, task)
    source = f"ogbench-{dataset}"
    store = None
    solved_all, raw_ep_all, raw_step_all = [], [], []
    raw_success, retries, pieces_n, terminal_steps = [], 0, 0, 0
    t0 = time.perf_counter()
    for path in tqdm(raw_info["blocks"], desc=f"relabel for task {task}", unit="block", disable=not progress, leave=False):
        block = load_block(path)
        retries += int(block["retries"].sum())
        pieces_block = []
        for j in range(len(block["index"])):
            raw = {k: block[k][j] for k in ("observations", "actions", "qpos", "qvel", "button_states") if k in block}
            pieces, solved = relabel_episode(raw, raw_successes(judge, raw), source)
            pieces_block += pieces
            solved_all.append(solved)
            raw_ep_all.append(np.full(len(solved), block["index"][j], np.int32))
            raw_step_all.append(np.arange(len(solved), dtype=np.int32))
            raw_success.append(bool(any(p["terminals"][-1] for p in pieces)))
            terminal_steps += sum(int(p["terminals"][-1]) for p in pieces)
        pieces_n += len(pieces_block)
        ds = EpisodeDataset.from_episodes(pieces_block, -np.ones(5, np.float32), np.ones(5, np.float32), env_id=env_id, task_names=[f"{env}-task{task}"])
        store = EpisodeStore.create(out, ds) if store is None else store.append(ds)
    judge.close()
    side = Path(out) / "ogbench"
    side.mkdir(exist_ok=True)
    solved = np.concatenate(solved_all)
    np.savez(side / "steps.npz", subtasks_solved=solved, raw_episode=np.concatenate(raw_ep_all), raw_step=np.concatenate(raw_step_all))
    transitions = int(len(solved))
    summary = {
        "env": env, "dataset": dataset, "task": task, "env_id": env_id, "seed": seed, "episode_length": episode_length,
        "num_subtasks": judge.num_subtasks, "raw_episodes": episodes, "transitions": transitions, "stored_episodes": pieces_n,
        "success_rate": float(np.mean(raw_success)), "success_transitions": terminal_steps,
        "mean_subtasks_solved": float(solved.mean()), "scene_retries": retries, "cache": str(cache),
        "generated_steps": raw_info["generated_steps"], "generation_seconds": raw_info["seconds"],
        "steps_per_second": raw_info["generated_steps"] / raw_info["seconds"] if raw_info["generated_steps"] else None,
        "workers": workers, "relabel_seconds": time.perf_counter() - t0,
    }
    atomic_write_text(side / "recipe.json", json.dumps(summary, indent=1))
    return summary


def summary_table(s: dict) -> str:
    speed = "cached" if not s["generated_steps"] else f"{s['steps_per_second']:.0f} steps/s with {s['workers']} worker(s)"
    rows = [
        ("raw episodes", f"{s['raw_episodes']} x {s['episode_length']} states"),
        ("transitions", f"{s['transitions']}"),
        ("stored episodes (split at success)", f"{s['stored_episodes']}"),
        ("success rate (raw episodes reaching the goal)", f"{s['success_rate']:.3f}"),
        ("success transitions (reward 1, terminal)", f"{s['success_transitions']}"),
        (f"mean subtasks solved (of {s['num_subtasks']})", f"{s['mean_subtasks_solved']:.3f}"),
        ("generation", speed),
    ]
    if s["env"] == "scene":
        rows.append(("scene health-check retries", f"{s['scene_retries']}"))
    lines = [f"| {s['env_id']} ({s['dataset']}) | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


__all__ = ["BLOCK_EPISODES", "RawRecipe", "default_cache_root", "generate_raw", "load_block", "make_ogbench_dataset",
           "raw_successes", "relabel_episode", "summary_table"]
