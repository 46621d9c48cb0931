"""Roll a policy out in an environment over fixed seeds and report its success rate."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .envs import is_multi_task, make_env

# Evaluation seeds start here, far from the seeds the built-in dataset generator uses.
EVAL_SEED_OFFSET = 10_000_000


def success_of(info: dict, reward: float) -> bool:
    """Success from info['success'] or info['is_success'] when present, else reward > 0."""
    for key in ("success", "is_success"):
        if key in info:
            return bool(info[key])
    return reward > 0


def run_episodes(act: Callable, env_id: str, seeds: list[int], progress: bool = False, make: Callable = make_env) -> list[dict]:
    """Run one episode per reset seed, side by side; `act` maps a batch of observations to (B, d) actions.
    `make(env_id)` builds each environment (a policy's make_env: frame windows). Returns per episode:
    seed, success, return, length (environment steps: an action-chunk wrapper's `env_steps` per decision)."""
    n = len(seeds)
    envs = [make(env_id) for _ in range(n)]
    obs = [env.reset(seed=s)[0] for s, env in zip(seeds, envs, strict=True)]
    active = np.ones(n, dtype=bool)
    success = np.zeros(n, dtype=bool)
    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=np.int64)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="eval episodes", leave=False)
    while active.any():
        idx = np.nonzero(active)[0]
        actions = np.asarray(act(stack_observations([obs[i] for i in idx])))  # (n_active, d)
        for j, i in enumerate(idx):
            o, r, terminated, truncated, info = envs[i].step(actions[j])
            obs[i] = o
            returns[i] += r
            lengths[i] += int(info.get("env_steps", 1))
            if success_of(info, r):
                success[i] = True
            if terminated or truncated:
                active[i] = False
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    for env in envs:
        env.close()
    return [{"seed": int(s), "success": bool(ok), "return": float(r), "length": int(k)} for s, ok, r, k in zip(seeds, success, returns, lengths, strict=True)]


def summarize(env_id: str, seed: int, per_episode: list[dict]) -> dict:
    return {
        "env_id": env_id,
        "episodes": len(per_episode),
        "seed": seed,
        "success_rate": float(np.mean([e["success"] for e in per_episode])),
        "mean_return": float(np.mean([e["return"] for e in per_episode])),
        "mean_length": float(np.mean([e["length"] for e in per_episode])),
        "per_episode": per_episode,
    }


def eval_seeds(episodes: int, seed: int) -> list[int]:
    """Episode i resets with seed EVAL_SEED_OFFSET + seed + i, so results are repeatable."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    return [EVAL_SEED_OFFSET + seed + i for i in range(episodes)]


def evaluate(act: Callable, env_id: str, episodes: int, seed: int = 0, progress: bool = False) -> dict:
    """Run `episodes` episodes of `act` over the fixed evaluation seeds and summarise them."""
    return summarize(env_id, seed, run_episodes(act, env_id, eval_seeds(episodes, seed), progress))


def _worker(model_dir: str, env_id: str, seeds: list[int], task: Optional[int], support_tau: float, instruction: Optional[str] = None,
            prior_weight: float = 0.0, prior_dir: Optional[str] = None) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    from .policy import QTPolicy

    policy = QTPolicy.from_checkpoint(model_dir, support_tau=support_tau, prior_weight=prior_weight, prior_checkpoint=prior_dir)
    return run_episodes(lambda obs: policy.act(obs, task=task, instruction=instruction), env_id, seeds, make=policy.make_env)


def record_videos(
    policy, env_id: str, out_dir: Path, episodes: int, seed: int = 0, task: Optional[int] = None, fps: int = 15,
    instruction: Optional[str] = None,
) -> list[Path]:
    """Roll the greedy policy out on the first `episodes` evaluation seeds and save each as an animated
    GIF (offscreen frames from env.render()). Multi-task ids record every task."""
    from PIL import Image

    if is_multi_task(env_id):
        from .envs.metaworld import single_task_env_ids

        return [p for e in single_task_env_ids(env_id) for p in record_videos(policy, e, out_dir, episodes, seed, None, fps, instruction)]
    instruction = policy.instruction_for_env(env_id, task, instruction)
    task = policy.task_for_env(env_id, task)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = policy.make_env(env_id, render_mode="rgb_array")
    written = []
    for s in eval_seeds(episodes, seed):
        obs, _ = env.reset(seed=s)
        frames = [env.render()]
        if frames[0] is None:
            raise ValueError(f"'{env_id}' renders no frames (render_mode='rgb_array' unsupported); drop --video")
        done, ok = False, False
        while not done:
            obs, r, terminated, truncated, info = env.step(policy.act(obs, task=task, instruction=instruction))
            ok = ok or success_of(info, r)
            frames.append(env.render())
            done = terminated or truncated
        name = env_id.replace("/", "_").replace(":", "_")
        path = out_dir / f"{name}_seed{s}_{'success' if ok else 'failure'}.gif"
        images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        written.append(path)
    env.close()
    return written


def stack_observations(observations: list):
    """A list of observations (arrays, or dicts of arrays) -> one batch (an array, or a dict of arrays)."""
    if isinstance(observations[0], dict):
        return {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    return np.stack(observations)


def random_policy(env_id: str, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    env = make_env(env_id)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high

    def act(obs) -> np.ndarray:
        n = len(next(iter(obs.values()))) if isinstance(obs, dict) else obs.shape[0]
        return rng.uniform(low, high, size=(n, low.shape[0])).astype(np.float32)

    return act


def evaluate_policy(
    policy,
    env_id: Optional[str],
    episodes: int,
    seed: int = 0,
    progress: bool = False,
    task: Optional[int] = None,
    workers: int = 1,
    instruction: Optional[str] = None,
) -> dict:
    """Evaluate a QTPolicy greedily in `env_id` (default: the environment recorded with the model).

    A multi-task id ("metaworld:mt10") is evaluated task by task, each with its task id (or, for a
    language-conditioned policy, its training instruction), `episodes` episodes per task; the result
    holds `per_task` success rates and their mean as `success_rate`. For a multi-task policy in a
    single-task MetaWorld id, the task id (or instruction) is looked up by name. `instruction`: the text a
    language-conditioned policy acts on, any text (one not seen in training included).
    `workers` > 1 splits the episodes over that many processes (a policy loaded from a checkpoint)."""
    env_id = env_id or policy.env_id
    if not env_id:
        raise ValueError("this checkpoint records no environment; pass --env")
    if is_multi_task(env_id):
        from .envs.metaworld import single_task_env_ids, tasks_from_env_id

        results = {
            t: evaluate_policy(policy, e, episodes, seed, progress, workers=workers, instruction=instruction)
            for t, e in zip(tasks_from_env_id(env_id), single_task_env_ids(env_id), strict=True)
        }
        return {
            "env_id": env_id,
            "episodes": episodes * len(results),
            "seed": seed,
            "success_rate": float(np.mean([r["success_rate"] for r in results.values()])),
            "mean_return": float(np.mean([r["mean_return"] for r in results.values()])),
            "per_task": {t: {"success_rate": r["success_rate"], "episodes": r["episodes"]} for t, r in results.items()},
        }
    instruction = policy.instruction_for_env(env_id, task, instruction)
    task = policy.task_for_env(env_id, task)
    seeds = eval_seeds(episodes, seed)
    workers = min(workers, episodes)
    prior_dir = None if policy.prior is None else policy.prior.model_dir
    if workers > 1 and policy.model_dir is not None and (policy.prior is None or prior_dir is not None):  # processes, each with its own copy
        from qtransformer.workers import process_pool

        parts = [seeds[k::workers] for k in range(workers)]
        with process_pool(workers) as pool:
            done = list(pool.map(
                _worker, [str(policy.model_dir)] * workers, [env_id] * workers, parts, [task] * workers,
                [policy.support_tau] * workers, [instruction] * workers, [policy.prior_weight] * workers,
                [None if prior_dir is None else str(prior_dir)] * workers,
            ))
        per_episode = sorted((e for part in done for e in part), key=lambda e: e["seed"])
    else:
        per_episode = run_episodes(lambda obs: policy.act(obs, task=task, instruction=instruction), env_id, seeds, progress, make=policy.make_env)
    result = summarize(env_id, seed, per_episode)
    if task is not None:
        result["task"] = task
    if instruction is not None:
        result["instruction"] = instruction
    return result
