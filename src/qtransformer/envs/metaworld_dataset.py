"""MetaWorld datasets: demonstrations, two recipes for "autonomous" episodes, and the dataset maker.

The environment and the scripted experts are in envs/metaworld.py; see docs/metaworld.md.

- two recipes for "autonomous" episodes that mostly fail: `replay_policy` (a demonstration's actions
  replayed open-loop with Gaussian noise, from the demonstration's reset seed) and `perturbed_policy`
  (the closed-loop expert with a structured per-episode perturbation: a wrong sub-goal, a constant
  bias on the xyz motion, stalls, and the gripper opened at a random time).
- `make_metaworld_dataset(tasks, demos, autonomous, recipe, seed, max_steps)`: an EpisodeDataset.
- `python -m qtransformer.envs.metaworld_dataset`: the success table of docs/metaworld.md.
"""

from __future__ import annotations

from typing import Callable, Optional

import gymnasium as gym
import numpy as np

from ..data import EpisodeDataset
from .metaworld import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MAX_STEPS,
    MT10_TASKS,
    check_camera,
    instruction_for,
    make_metaworld_env,
    metaworld_env_id,
    noisy_expert,
    scripted_expert,
)
from .rollout import rollout


def paper_mix_autonomous(demos: int) -> int:
    """Autonomous episodes per task for the paper's simulated mix: demonstrations are about 8 % of the episodes."""
    return int(round(demos * 92 / 8))


# Noise-level defaults of the two recipes, tuned so that autonomous success is roughly 10-40 % on each
# MT10 task with max_steps=200 (table in docs/metaworld.md). Other tasks use the "*" entry.
DEFAULT_REPLAY_NOISE = {  # std of the (AR(1), correlation 0.9) action noise of `replay`
    "reach-v3": 0.2, "push-v3": 0.15, "pick-place-v3": 0.15, "door-open-v3": 0.3, "drawer-open-v3": 0.25,
    "drawer-close-v3": 0.6, "button-press-topdown-v3": 0.3, "peg-insert-side-v3": 0.1,
    "window-open-v3": 0.4, "window-close-v3": 0.5, "*": 0.25,
}
DEFAULT_PERTURB_SEVERITY = {  # severity of `perturbed` (scales every perturbation)
    "reach-v3": 1.5, "push-v3": 0.8, "pick-place-v3": 0.8, "door-open-v3": 3.0, "drawer-open-v3": 1.75,
    "drawer-close-v3": 8.0, "button-press-topdown-v3": 3.0, "peg-insert-side-v3": 0.75,
    "window-open-v3": 3.0, "window-close-v3": 4.0, "*": 1.5,
}
RECIPES = ("replay", "perturbed")
REPLAY_CORRELATION = 0.9  # step-to-step correlation of the replay noise (AR(1))


# -- autonomous recipes: one policy per episode ------------------------------------------------------


def replay_policy(
    demo_actions: np.ndarray, rng: np.random.Generator, noise: float = 0.2, correlation: float = REPLAY_CORRELATION
) -> Callable[[np.ndarray], np.ndarray]:
    """Recipe `replay`: a demonstration's action sequence, replayed open-loop (the observation is ignored)
    with Gaussian noise of std `noise` on every dimension at every step. The noise is an AR(1) process
    with step-to-step `correlation` (0: independent per step), so the hand drifts rather than jitters.
    Run it from the demonstration's reset seed (same task variation, same initial state). Past the
    demonstration's end the hand holds still with the last gripper command."""
    demo_actions = np.asarray(demo_actions, dtype=np.float32).reshape(-1, 4)
    if not 0.0 <= correlation < 1.0:
        raise ValueError(f"correlation must be in [0, 1), got {correlation}")
    hold = np.concatenate([np.zeros(3, np.float32), demo_actions[-1, 3:]])
    state = {"t": 0, "e": noise * rng.standard_normal(4)}
    innovation = noise * np.sqrt(1.0 - correlation**2)

    def act(obs):
        t = state["t"]
        base = demo_actions[t] if t < len(demo_actions) else hold
        if t > 0:
            state["e"] = correlation * state["e"] + innovation * rng.standard_normal(4)
        state["t"] = t + 1
        return np.clip(base + state["e"], -1.0, 1.0).astype(np.float32)

    return act


def perturbed_policy(name: str, rng: np.random.Generator, severity: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """Recipe `perturbed`: the closed-loop scripted expert with a structured perturbation drawn once per
    episode, all scaled by `severity`:

    - a wrong sub-goal: the expert sees the object position (obs[4:7]) and the goal (obs[36:39]) shifted by
      per-episode offsets (std 2 cm x severity per axis), so it aims, grasps and places off target;
    - a constant bias on the xyz motion (std 0.1 x severity per axis);
    - stalls: from a random step, with probability min(1, 0.3 x severity), the arm freezes for 20-60 steps;
    - the gripper opened: with probability min(1, 0.3 x severity), from a random step on the gripper
      command is -1 (open) for the rest of the episode (drops a grasped object);
    plus small per-step Gaussian noise (std 0.1).
    """
    expert = scripted_expert(name)
    s = float(severity)
    obj_offset = 0.02 * s * rng.standard_normal(3)
    goal_offset = 0.02 * s * rng.standard_normal(3)
    bias = 0.1 * s * rng.standard_normal(3)
    p = min(1.0, 0.3 * s)
    stall_start = int(rng.integers(0, 120)) if rng.random() < p else -1
    stall_len = int(rng.integers(20, 61))
    release_at = int(rng.integers(10, 150)) if rng.random() < p else -1
    t = [0]

    def act(obs):
        seen = np.array(obs, dtype=np.float64, copy=True)
        seen[4:7] += obj_offset
        seen[36:39] += goal_offset
        a = expert(seen).astype(np.float64)
        a[:3] += bias
        if stall_start >= 0 and stall_start <= t[0] < stall_start + stall_len:
            a[:3] = 0.0
        if release_at >= 0 and t[0] >= release_at:
            a[3] = -1.0
        a += 0.1 * rng.standard_normal(4)
        t[0] += 1
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    return act


def _default(table: dict, name: str) -> float:
    return float(table.get(name, table["*"]))


# -- datasets --------------------------------------------------------------------------------------


def _on_state(policy: Callable[[np.ndarray], np.ndarray]) -> Callable:
    """A policy of the 39-d state, for observations that may be {"state", "image"} dicts (a camera)."""
    return lambda obs: policy(obs["state"] if isinstance(obs, dict) else obs)


def _task_episodes(
    name: str, task_id: int, demos: int, autonomous: int, recipe: str, seed: int, max_steps: int,
    expert_noise: float, noise: Optional[float], camera: Optional[str] = None, image_size: int = DEFAULT_IMAGE_SIZE,
    render: str = "full",
) -> list[dict]:
    """One task's episodes. Its random numbers depend on (seed, task_id) only, so tasks can be made in
    any order or in parallel with the same result. The camera only adds frames: the same episodes with or without."""
    rng = np.random.default_rng([seed, task_id])
    env = make_metaworld_env(name, seed=seed, max_steps=max_steps, vary_task=True, camera=camera, image_size=image_size, render=render)
    state_env = env if camera is None else None  # for unrecorded expert runs: made when first needed, without a camera
    instruction = instruction_for(name)
    base_seed = seed * 1_000_003 + task_id * 10_007
    episodes, demo_records = [], []  # demo_records: (reset seed, actions)
    for i in range(demos):
        reset_seed = base_seed + i
        ep = rollout(env, _on_state(noisy_expert(name, rng, expert_noise)), seed=reset_seed)
        demo_records.append((reset_seed, ep["actions"]))
        episodes.append(dict(ep, source="demonstration", task=task_id, instruction=instruction))
    for j in range(autonomous):
        if recipe == "replay":
            level = _default(DEFAULT_REPLAY_NOISE, name) if noise is None else noise
            if demo_records:
                reset_seed, actions = demo_records[j % len(demo_records)]
            else:
                reset_seed = base_seed + demos + j
                if state_env is None:
                    state_env = make_metaworld_env(name, seed=seed, max_steps=max_steps, vary_task=True)
                actions = rollout(state_env, scripted_expert(name), seed=reset_seed)["actions"]
            policy = replay_policy(actions, rng, noise=level)
        else:
            level = _default(DEFAULT_PERTURB_SEVERITY, name) if noise is None else noise
            reset_seed = base_seed + demos + j
            policy = perturbed_policy(name, rng, severity=level)
        ep = rollout(env, _on_state(policy), seed=reset_seed)
        episodes.append(dict(ep, source="autonomous", task=task_id, instruction=instruction))
    env.close()
    if state_env is not None and state_env is not env:
        state_env.close()
    return episodes


def make_metaworld_dataset(
    tasks: list[str],
    demos: int,
    autonomous: int,
    recipe: str = "perturbed",
    seed: int = 0,
    max_steps: int = DEFAULT_MAX_STEPS,
    progress: bool = True,
    expert_noise: float = 0.1,
    noise: Optional[float] = None,
    workers: int = 1,
    camera: Optional[str] = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    render: str = "full",
) -> EpisodeDataset:
    """Per task, `demos` demonstrations (the scripted expert plus `expert_noise` Gaussian action noise)
    and `autonomous` episodes of `recipe` ("replay" or "perturbed"). Every episode resets with its own
    seed, which picks one of the task's 50 variations. `noise`: the recipe's noise level (replay: action
    noise std; perturbed: severity); default: the tuned per-task value. Task ids index `task_names` = `tasks`.

    `replay` replays demonstration j % demos of the same task (its actions, its reset seed); with demos=0
    it replays unrecorded noise-free expert episodes instead. `workers` > 1 makes tasks in parallel
    processes (same dataset as one process). `camera` (one of envs.metaworld.CAMERAS): every step also
    records that camera's (image_size, image_size, 3) frame, rendered offscreen (slow on a CPU:
    docs/metaworld.md; `render="fast"` draws it without shadows and multisampling, about 6x faster
    there); the episodes are the same as without."""
    from tqdm import tqdm

    tasks = list(tasks)
    if not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"need a non-empty list of distinct MetaWorld tasks, got {tasks}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe '{recipe}'; choose one of {RECIPES}")
    if demos < 0 or autonomous < 0 or demos + autonomous == 0 or seed < 0:
        raise ValueError(f"need demos >= 0, autonomous >= 0 (not both 0) and seed >= 0; got {demos}, {autonomous}, {seed}")
    check_camera(camera, image_size, render)
    args = [(name, task_id, demos, autonomous, recipe, seed, max_steps, expert_noise, noise, camera, image_size, render) for task_id, name in enumerate(tasks)]
    if workers > 1 and len(tasks) > 1:
        from qtransformer.workers import process_pool

        with process_pool(min(workers, len(tasks))) as pool:
            per_task = list(tqdm(pool.map(_task_episodes, *zip(*args, strict=True)), total=len(tasks), desc="tasks", disable=not progress, leave=False))
    else:
        per_task = [_task_episodes(*a) for a in tqdm(args, desc="tasks", disable=not progress, leave=False)]
    episodes = [ep for eps in per_task for ep in eps]
    space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
    return EpisodeDataset.from_episodes(episodes, space.low, space.high, env_id=metaworld_env_id(tasks, camera, image_size, render), task_names=tasks)


def success_table(tasks: list[str], episodes: int = 30, seed: int = 0, max_steps: int = DEFAULT_MAX_STEPS) -> list[dict]:
    """Per task: success of `episodes` demonstrations and of `episodes` episodes of each recipe at its
    default noise level (what make_metaworld_dataset produces), and the time per environment step."""
    import time

    rows = []
    for name in tasks:
        t0 = time.perf_counter()
        replay = make_metaworld_dataset([name], episodes, episodes, "replay", seed=seed, max_steps=max_steps, progress=False)
        perturbed = make_metaworld_dataset([name], 0, episodes, "perturbed", seed=seed, max_steps=max_steps, progress=False)
        seconds = time.perf_counter() - t0
        by_source = replay.success_by_source()
        rows.append({
            "task": name, "episodes": episodes,
            "demonstration": by_source["demonstration"][1], "replay": by_source["autonomous"][1],
            "perturbed": perturbed.success_by_source()["autonomous"][1],
            "replay_noise": _default(DEFAULT_REPLAY_NOISE, name), "perturb_severity": _default(DEFAULT_PERTURB_SEVERITY, name),
            "ms_per_step": 1e3 * seconds / (replay.num_steps + perturbed.num_steps),
        })
    return rows


def main(argv: Optional[list[str]] = None) -> None:
    """python -m qtransformer.envs.metaworld_dataset [--tasks a,b] [--episodes 30] [--seed 0]: the success table."""
    import argparse

    parser = argparse.ArgumentParser(description="Success of MetaWorld demonstrations and autonomous recipes (a markdown table).")
    parser.add_argument("--tasks", default=",".join(MT10_TASKS), help="comma-separated v3 task names (default: MT10)")
    parser.add_argument("--episodes", type=int, default=30, help="episodes per task and source")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS)
    args = parser.parse_args(argv)
    print("| task | demos | replay (noise) | perturbed (severity) | ms/step |")
    print("|---|---|---|---|---|")
    for r in success_table(args.tasks.split(","), args.episodes, args.seed, args.max_steps):
        print(f"| {r['task']} | {r['demonstration']:.2f} | {r['replay']:.2f} ({r['replay_noise']:g}) | "
              f"{r['perturbed']:.2f} ({r['perturb_severity']:g}) | {r['ms_per_step']:.2f} |", flush=True)


if __name__ == "__main__":
    main()


__all__ = [
    "DEFAULT_PERTURB_SEVERITY", "DEFAULT_REPLAY_NOISE", "RECIPES", "REPLAY_CORRELATION", "make_metaworld_dataset",
    "paper_mix_autonomous", "perturbed_policy", "replay_policy", "success_table",
]
