"""MetaWorld (v3) tasks with a sparse success reward, scripted experts, and dataset recipes.

MetaWorld is an optional extra (`pip install -e '.[sim]'`): it is imported lazily, inside the functions
that need it, so the core package never imports it. See docs/metaworld.md.

- `make_metaworld_env(name, seed)`: one task ("reach-v3", ...) with one task variation (object and goal
  placement, one of MetaWorld's 50 per task) chosen by `seed`; reward 1.0 and terminated on the first
  step with `info["success"]`, else 0.0; truncated (a timeout) after `max_steps` steps. Observations are
  MetaWorld's 39-d state as float32 (with the goal visible, as in the MT benchmarks), actions Box(-1, 1, (4,)).
  With `vary_task=True`, `reset(seed=s)` picks variation `s % 50` instead, so a dataset covers them all.
- `scripted_expert(name)`: MetaWorld's scripted policy for the task, as a callable obs -> action.
- two recipes for "autonomous" episodes that mostly fail: `replay_policy` (a demonstration's actions
  replayed open-loop with Gaussian noise, from the demonstration's reset seed) and `perturbed_policy`
  (the closed-loop expert with a structured per-episode perturbation: a wrong sub-goal, a constant
  bias on the xyz motion, stalls, and the gripper opened at a random time).
- `make_metaworld_dataset(tasks, demos, autonomous, recipe, seed, max_steps)`: an EpisodeDataset.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Optional

import gymnasium as gym
import numpy as np

from ..data import EpisodeDataset
from .rollout import rollout

INSTALL_HINT = "pip install -e '.[sim]'  (or: pip install 'metaworld>=3')"

MT10_TASKS = [
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
    "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3",
]

MT10_INSTRUCTIONS = {
    "reach-v3": "reach the goal",
    "push-v3": "push the puck to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "door-open-v3": "open the door",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button from the top",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}

# MetaWorld's environments allow 500 steps (max_path_length); its scripted experts solve the MT10 tasks
# in 35-140 steps (docs/metaworld.md), so 200 leaves room for slow recoveries while keeping failed
# episodes (which always run to the cut) cheap. Pass max_steps=500 for MetaWorld's own horizon.
DEFAULT_MAX_STEPS = 200
NUM_VARIATIONS = 50  # MetaWorld makes 50 task variations (object/goal placements) per task


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


def _choose_renderer() -> None:
    """For headless rendering (videos) only: MuJoCo's software renderer, OSMesa, unless the user chose
    one (MUJOCO_GL=egl on a GPU machine, glfw with a display). Without rendering nothing is set, so
    making datasets and evaluating need no OpenGL library at all."""
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def _import_metaworld():
    try:
        import metaworld  # noqa: F401
        import metaworld.policies  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"MetaWorld is not installed ({exc}); install the optional extra: {INSTALL_HINT}") from exc
    return metaworld


def instruction_for(name: str) -> str:
    """A short instruction text: a hand-written one for the MT10 tasks, else the task's name in words."""
    if name in MT10_INSTRUCTIONS:
        return MT10_INSTRUCTIONS[name]
    base = name[:-3] if name.endswith("-v3") else name
    return base.replace("-", " ")


def metaworld_env_id(tasks: list[str]) -> str:
    """The env_id recorded in a dataset: "metaworld:<task>", "metaworld:mt10", or "metaworld:<a>,<b>"."""
    if len(tasks) == 1:
        return f"metaworld:{tasks[0]}"
    if sorted(tasks) == sorted(MT10_TASKS):
        return "metaworld:mt10"
    return "metaworld:" + ",".join(tasks)


def tasks_from_env_id(env_id: str) -> list[str]:
    """The inverse of metaworld_env_id: "metaworld:mt10" -> the MT10 task list, "metaworld:a,b" -> [a, b]."""
    if not env_id.startswith("metaworld:"):
        raise ValueError(f"'{env_id}' is not a MetaWorld id (metaworld:<task>, metaworld:mt10 or metaworld:<a>,<b>)")
    rest = env_id[len("metaworld:"):]
    return list(MT10_TASKS) if rest == "mt10" else [t for t in rest.split(",") if t]


class MetaWorldSparseEnv(gym.Env):
    """One MetaWorld task with the sparse success reward (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(
        self, name: str, seed: int = 0, max_steps: int = DEFAULT_MAX_STEPS, vary_task: bool = False, render_mode: Optional[str] = None
    ):
        metaworld = _import_metaworld()
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if name not in metaworld.MT1.ENV_NAMES:
            close = [n for n in metaworld.MT1.ENV_NAMES if name.split("-")[0] in n][:5]
            raise ValueError(f"unknown MetaWorld task '{name}'; v3 names look like 'reach-v3' (similar: {close})")
        self.name, self.seed, self.max_steps, self.vary_task = name, int(seed), int(max_steps), vary_task
        benchmark = metaworld.MT1(name, seed=self.seed)  # 50 variations, drawn from `seed`
        self._tasks = list(benchmark.train_tasks)
        self.render_mode = render_mode
        if render_mode is None:
            self._env = benchmark.train_classes[name]()
        else:  # offscreen frames from the "corner" camera, for videos
            _choose_renderer()
            self._env = benchmark.train_classes[name](render_mode=render_mode, camera_name="corner", width=128, height=128)
        self._env.max_path_length = max(self.max_steps, 1)  # we cut episodes ourselves
        self.variation = 0
        self._env.set_task(self._tasks[self.variation])
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(39,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self._t = 0

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if self.vary_task and seed is not None:
            self.variation = int(seed) % len(self._tasks)
            self._env.set_task(self._tasks[self.variation])
        obs, info = self._env.reset()
        self._t = 0
        return np.asarray(obs, dtype=np.float32), {"success": False, "variation": self.variation}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(4), -1.0, 1.0)
        obs, _, _, _, info = self._env.step(a)
        self._t += 1
        success = bool(info.get("success", 0.0))
        truncated = (not success) and self._t >= self.max_steps
        info = dict(info, success=success)
        return np.asarray(obs, dtype=np.float32), float(success), success, truncated, info

    def render(self):
        if self.render_mode is None:
            return None
        try:
            frame = self._env.render()
        except Exception as exc:  # noqa: BLE001 - no OpenGL for offscreen rendering
            raise RuntimeError(
                f"MuJoCo could not render offscreen with MUJOCO_GL={os.environ.get('MUJOCO_GL')} ({exc}); "
                "install Mesa's software renderer (Debian: apt-get install libosmesa6) or set MUJOCO_GL=egl on a GPU machine"
            ) from exc
        return np.asarray(frame)[::-1].copy() if frame is not None else None  # MuJoCo's rows run bottom-up

    def close(self):
        self._env.close()


def make_metaworld_env(
    name: str, seed: int = 0, max_steps: int = DEFAULT_MAX_STEPS, vary_task: bool = False, render_mode: Optional[str] = None
) -> gym.Env:
    """A MetaWorld v3 task ("reach-v3") with the sparse success reward; see MetaWorldSparseEnv."""
    return MetaWorldSparseEnv(name, seed=seed, max_steps=max_steps, vary_task=vary_task, render_mode=render_mode)


def _policy_class_name(name: str) -> str:
    base = name[:-3] if name.endswith("-v3") else name
    words = "".join(w.capitalize() for w in base.split("-"))
    words = {"PegInsertSide": "PegInsertionSide"}.get(words, words)
    return f"Sawyer{words}V3Policy"


def scripted_expert(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """MetaWorld's scripted policy for task `name` (e.g. SawyerPegInsertionSideV3Policy for
    peg-insert-side-v3), as a callable obs -> float32 action in [-1, 1]^4."""
    _import_metaworld()
    import metaworld.policies as policies

    cls_name = _policy_class_name(name)
    cls = getattr(policies, cls_name, None)
    if cls is None:
        raise ValueError(f"MetaWorld has no scripted policy '{cls_name}' for task '{name}'")
    policy = cls()
    # the policies warn when their gain saturates the action; the env clips anyway
    warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", module=r"metaworld")

    def act(obs: np.ndarray) -> np.ndarray:
        a = policy.get_action(np.asarray(obs, dtype=np.float64))
        return np.clip(np.asarray(a, dtype=np.float32), -1.0, 1.0)

    act.__name__ = f"{cls_name}.get_action"
    return act


def noisy_expert(name: str, rng: np.random.Generator, noise: float = 0.1) -> Callable[[np.ndarray], np.ndarray]:
    """The demonstrator: the scripted expert plus small Gaussian noise on every action dimension."""
    expert = scripted_expert(name)

    def act(obs):
        a = expert(obs) + noise * rng.standard_normal(4)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    return act


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


def _task_episodes(
    name: str, task_id: int, demos: int, autonomous: int, recipe: str, seed: int, max_steps: int,
    expert_noise: float, noise: Optional[float],
) -> list[dict]:
    """One task's episodes. Its random numbers depend on (seed, task_id) only, so tasks can be made in
    any order or in parallel with the same result."""
    rng = np.random.default_rng([seed, task_id])
    env = make_metaworld_env(name, seed=seed, max_steps=max_steps, vary_task=True)
    instruction = instruction_for(name)
    base_seed = seed * 1_000_003 + task_id * 10_007
    episodes, demo_records = [], []  # demo_records: (reset seed, actions)
    for i in range(demos):
        reset_seed = base_seed + i
        ep = rollout(env, noisy_expert(name, rng, expert_noise), seed=reset_seed)
        demo_records.append((reset_seed, ep["actions"]))
        episodes.append(dict(ep, source="demonstration", task=task_id, instruction=instruction))
    for j in range(autonomous):
        if recipe == "replay":
            level = _default(DEFAULT_REPLAY_NOISE, name) if noise is None else noise
            if demo_records:
                reset_seed, actions = demo_records[j % len(demo_records)]
            else:
                reset_seed = base_seed + demos + j
                actions = rollout(env, scripted_expert(name), seed=reset_seed)["actions"]
            policy = replay_policy(actions, rng, noise=level)
        else:
            level = _default(DEFAULT_PERTURB_SEVERITY, name) if noise is None else noise
            reset_seed = base_seed + demos + j
            policy = perturbed_policy(name, rng, severity=level)
        ep = rollout(env, policy, seed=reset_seed)
        episodes.append(dict(ep, source="autonomous", task=task_id, instruction=instruction))
    env.close()
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
) -> EpisodeDataset:
    """Per task, `demos` demonstrations (the scripted expert plus `expert_noise` Gaussian action noise)
    and `autonomous` episodes of `recipe` ("replay" or "perturbed"). Every episode resets with its own
    seed, which picks one of the task's 50 variations. `noise`: the recipe's noise level (replay: action
    noise std; perturbed: severity); default: the tuned per-task value. Task ids index `task_names` = `tasks`.

    `replay` replays demonstration j % demos of the same task (its actions, its reset seed); with demos=0
    it replays unrecorded noise-free expert episodes instead. `workers` > 1 makes tasks in parallel
    processes (same dataset as one process)."""
    from tqdm import tqdm

    tasks = list(tasks)
    if not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"need a non-empty list of distinct MetaWorld tasks, got {tasks}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe '{recipe}'; choose one of {RECIPES}")
    if demos < 0 or autonomous < 0 or demos + autonomous == 0 or seed < 0:
        raise ValueError(f"need demos >= 0, autonomous >= 0 (not both 0) and seed >= 0; got {demos}, {autonomous}, {seed}")
    args = [(name, task_id, demos, autonomous, recipe, seed, max_steps, expert_noise, noise) for task_id, name in enumerate(tasks)]
    if workers > 1 and len(tasks) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=mp.get_context("spawn")) as pool:
            per_task = list(tqdm(pool.map(_task_episodes, *zip(*args, strict=True)), total=len(tasks), desc="tasks", disable=not progress, leave=False))
    else:
        per_task = [_task_episodes(*a) for a in tqdm(args, desc="tasks", disable=not progress, leave=False)]
    episodes = [ep for eps in per_task for ep in eps]
    space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
    return EpisodeDataset.from_episodes(episodes, space.low, space.high, env_id=metaworld_env_id(tasks), task_names=tasks)


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
    """python -m qtransformer.envs.metaworld_tasks [--tasks a,b] [--episodes 30] [--seed 0]: the success table."""
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
    "DEFAULT_MAX_STEPS", "DEFAULT_PERTURB_SEVERITY", "DEFAULT_REPLAY_NOISE", "INSTALL_HINT", "MT10_INSTRUCTIONS",
    "MT10_TASKS", "MetaWorldSparseEnv", "RECIPES", "instruction_for", "make_metaworld_dataset", "make_metaworld_env",
    "metaworld_env_id", "noisy_expert", "perturbed_policy", "replay_policy", "scripted_expert", "success_table", "tasks_from_env_id",
]
