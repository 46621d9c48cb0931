"""OGBench manipulation: the single-task evaluation environments and the scripted-oracle data driver.

OGBench is an optional extra (`pip install -e '.[ogbench]'`), imported lazily. See docs/ogbench.md.

- `make_ogbench_env("ogbench:cube-single-singletask-task1-v0")`: the OGBench single-task environment
  (gymnasium.make of the id OGBench registers), with our sparse success reward: reward 1.0 and
  terminated on the step OGBench reports `info["success"]` (every subtask solved; OGBench >= 1.2
  judges the state the step starts from), else 0.0; truncated at OGBench's time limit. OGBench's own
  reward (subtasks solved - subtasks) is kept as `info["subtasks_solved"]` and `info["num_subtasks"]`.
- `generate_episode(...)`: one episode of the package's own scripted oracles ("play": the plan
  oracles, "noisy": the Markov oracles with Gaussian noise and random actions) in the environment's
  data-collection mode, following OGBench's published generation recipe, seeded per episode.
- `TaskJudge`: the single-task environment used as a success check on recorded states.
"""

from __future__ import annotations

import os
from typing import Optional

import gymnasium as gym
import numpy as np

INSTALL_HINT = "pip install -e '.[ogbench]'  (or: pip install 'ogbench>=1.2,<1.3')"
PREFIX = "ogbench:"
ENVS = ("cube-single", "cube-double", "scene", "puzzle-3x3", "puzzle-4x4")
DATASET_TYPES = ("play", "noisy")
NUM_TASKS = 5
EPISODE_LENGTH = 1001  # OGBench's max_episode_steps for every manipulation dataset: 1001 states, 1000 transitions

# The published recipe (data_gen_scripts/generate_manipspace.py and commands.sh of the OGBench repository).
PLAN_NOISE = 0.1  # std scale of the plan oracles' temporally correlated plan noise ("play")
PLAN_NOISE_SMOOTHING = 0.5  # sigma of the Gaussian filter over that noise
MARKOV_MIN_NORM = 0.4  # minimum norm of the Markov oracles' relative moves ("noisy")
MARKOV_NOISE = 0.1  # "noisy": per episode xi ~ U(0, 0.1); action noise std [xi, xi, xi, 3 xi, 10 xi]
P_RANDOM_ACTION = {"cube-single": 0.1, "cube-double": 0.1, "scene": 0.1, "puzzle-3x3": 0.2, "puzzle-4x4": 0.2}  # noisy only


def _import_ogbench():
    # Headless rendering, as for MetaWorld: MuJoCo's software renderer unless the user chose one (egl on a GPU).
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    import warnings

    # these environments build a float64 Box on every access of action_space, and gymnasium warns each time
    warnings.filterwarnings("ignore", message=r".*precision lowered by casting to float32.*")
    try:
        import ogbench  # noqa: F401  (registers the environments with gymnasium)
        import ogbench.manipspace  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"OGBench is not installed ({exc}); install the optional extra: {INSTALL_HINT}") from exc
    return ogbench


def singletask_id(env: str, task: int) -> str:
    """OGBench's registered single-task id: ("cube-single", 1) -> "cube-single-singletask-task1-v0"."""
    _check(env, task)
    return f"{env}-singletask-task{task}-v0"


def ogbench_env_id(env: str, task: int) -> str:
    """The env_id recorded in a dataset: "ogbench:cube-single-singletask-task1-v0"."""
    return PREFIX + singletask_id(env, task)


def _check(env: str, task: int) -> None:
    if env not in ENVS:
        raise ValueError(f"unknown OGBench environment '{env}'; choose one of {', '.join(ENVS)}")
    if not 1 <= int(task) <= NUM_TASKS:
        raise ValueError(f"task must be 1..{NUM_TASKS}, got {task}")


def parse_env_id(env_id: str) -> str:
    """"ogbench:<id>" -> "<id>" (checked: a single-task id that OGBench registers)."""
    if not env_id.startswith(PREFIX):
        raise ValueError(f"'{env_id}' is not an OGBench id (ogbench:<env>-singletask-task<N>-v0)")
    gym_id = env_id[len(PREFIX):]
    if "-singletask" not in gym_id:
        raise ValueError(
            f"'{env_id}': only OGBench's single-task (reward-based) environments are supported, "
            "e.g. ogbench:cube-single-singletask-task1-v0"
        )
    _import_ogbench()
    if gym_id not in gym.registry:
        raise ValueError(f"'{env_id}': OGBench registers no environment '{gym_id}' (e.g. cube-single-singletask-task1-v0)")
    return gym_id


def _successes(unwrapped) -> np.ndarray:
    """The environment's own per-subtask success check on its current state, flattened in the order of
    ogbench.relabel_utils (scene: cubes, buttons, drawer, window)."""
    s = unwrapped._compute_successes()
    if isinstance(s, tuple):  # scene
        cubes, buttons, drawer, window = s
        return np.asarray([*cubes, *buttons, drawer, window], dtype=bool)
    return np.asarray(s, dtype=bool)


class OGBenchSparseEnv(gym.Wrapper):
    """An OGBench single-task environment with the sparse success reward (see the module docstring)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.num_subtasks: Optional[int] = None

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.num_subtasks = len(_successes(self.env.unwrapped))
        return np.asarray(obs, dtype=np.float32), dict(info, success=False)

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self.action_space.shape), -1.0, 1.0)
        obs, reward, terminated, truncated, info = self.env.step(a)
        success = bool(info.get("success", False))
        info = dict(info, success=success, subtasks_solved=int(round(reward)) + self.num_subtasks, num_subtasks=self.num_subtasks)
        return np.asarray(obs, dtype=np.float32), float(success), bool(terminated), bool(truncated), info


def make_ogbench_env(env_id: str, **kwargs) -> gym.Env:
    """"ogbench:<env>-singletask-task<N>-v0" -> that OGBench environment with the sparse success reward."""
    gym_id = parse_env_id(env_id)
    env = gym.make(gym_id, disable_env_checker=True, **kwargs)
    return OGBenchSparseEnv(env)


class TaskJudge:
    """The single-task environment of (env, task), used only to judge recorded states: set_state to a
    recorded (qpos, qvel[, button_states]) and read the environment's own per-subtask success check
    against that task's goal."""

    def __init__(self, env: str, task: int):
        _import_ogbench()
        self.env = gym.make(singletask_id(env, task), disable_env_checker=True)
        self.env.reset(seed=0)  # sets the task's goal (cube targets, button/drawer/window targets)
        self.u = self.env.unwrapped
        self.has_buttons = hasattr(self.u, "_cur_button_states")
        self.num_subtasks = len(_successes(self.u))

    def successes(self, qpos: np.ndarray, qvel: np.ndarray, button_states: Optional[np.ndarray] = None) -> np.ndarray:
        """(T, num_subtasks) bool for T recorded states."""
        out = np.zeros((len(qpos), self.num_subtasks), dtype=bool)
        for t in range(len(qpos)):
            if self.has_buttons:
                self.u.set_state(np.asarray(qpos[t], np.float64), np.asarray(qvel[t], np.float64), np.asarray(button_states[t]).astype(np.int64))
            else:
                self.u.set_state(np.asarray(qpos[t], np.float64), np.asarray(qvel[t], np.float64))
            out[t] = _successes(self.u)
        return out

    def close(self):
        self.env.close()


# -- the scripted-oracle driver ---------------------------------------------------------------------


def make_collection_env(env: str, episode_length: int = EPISODE_LENGTH) -> gym.Env:
    """The goal-conditioned environment in data-collection mode (privileged info for the oracles), no
    termination at the goal, cut after `episode_length` - 1 steps (so `episode_length` states)."""
    _import_ogbench()
    if env not in ENVS:
        raise ValueError(f"unknown OGBench environment '{env}'; choose one of {', '.join(ENVS)}")
    return gym.make(f"{env}-v0", terminate_at_goal=False, mode="data_collection", max_episode_steps=episode_length, disable_env_checker=True)


def make_oracles(env_name: str, dataset: str, env: gym.Env) -> dict:
    """The oracles OGBench's recipe uses per environment, keyed by the environment's target task."""
    _import_ogbench()
    from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
    from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
    from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    if dataset not in DATASET_TYPES:
        raise ValueError(f"unknown OGBench dataset type '{dataset}'; choose one of {DATASET_TYPES}")
    plan = dict(noise=PLAN_NOISE, noise_smoothing=PLAN_NOISE_SMOOTHING)
    if env_name.startswith("cube"):
        if dataset == "noisy":
            return {"cube": CubeMarkovOracle(env=env, min_norm=MARKOV_MIN_NORM)}
        return {"cube": CubePlanOracle(env=env, **plan)}
    if env_name == "scene":
        if dataset == "noisy":
            return {
                "cube": CubeMarkovOracle(env=env, min_norm=MARKOV_MIN_NORM, max_step=100),
                "button": ButtonMarkovOracle(env=env, min_norm=MARKOV_MIN_NORM),
                "drawer": DrawerMarkovOracle(env=env, min_norm=MARKOV_MIN_NORM),
                "window": WindowMarkovOracle(env=env, min_norm=MARKOV_MIN_NORM),
            }
        return {
            "cube": CubePlanOracle(env=env, **plan),
            "button": ButtonPlanOracle(env=env, **plan),
            "drawer": DrawerPlanOracle(env=env, **plan),
            "window": WindowPlanOracle(env=env, **plan),
        }
    if env_name.startswith("puzzle"):
        if dataset == "noisy":
            return {"button": ButtonMarkovOracle(env=env, min_norm=MARKOV_MIN_NORM, gripper_always_closed=True)}
        return {"button": ButtonPlanOracle(env=env, gripper_always_closed=True, **plan)}
    raise ValueError(f"unknown OGBench environment '{env_name}'")


def stack_probability(env_name: str) -> float:
    """OGBench's per-episode probability of stacking a cube on another when it picks a new target
    (drawn from the global numpy generator, as the recipe does)."""
    if env_name == "cube-single":
        return 0.0
    if env_name == "cube-double":
        return float(np.random.uniform(0.0, 0.25))
    return 0.5  # scene (puzzles have no cubes; set_new_target ignores it there)


def scene_is_healthy(qpos: np.ndarray) -> bool:
    """OGBench's scene health check: the cube never goes too far right, nor too far left outside the drawer."""
    xyz = np.asarray(qpos)[:, 14:17]
    if (xyz[:, 1] >= 0.29).any():
        return False
    return not ((xyz[:, 1] <= -0.3) & ((xyz[:, 2] < 0.06) | (xyz[:, 2] > 0.08))).any()


def episode_seed(seed: int, index: int) -> int:
    """The 32-bit seed of raw episode `index` of a dataset with seed `seed` (independent of workers)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def generate_episode(env_name: str, dataset: str, seed: int, env: Optional[gym.Env] = None, episode_length: int = EPISODE_LENGTH) -> dict:
    """One episode of `episode_length` states (episode_length - 1 oracle actions), as OGBench records it:
    observations, qpos, qvel (and button_states) of every state, the actions between them, and the number
    of scene health-check retries. Everything random derives from `seed`: the global numpy generator (the
    oracles' plans and noise, the per-episode noise level and stacking probability), the environment's
    generator (reset and new targets) and a generator for the random actions."""
    own = env is None
    if own:
        env = make_collection_env(env_name, episode_length)
    np.random.seed(seed)
    # OGBench's recipe draws random actions with env.action_space.sample(), but these environments build a
    # fresh, unseeded Box on every access of action_space: draw them from our own seeded generator instead
    # (the same distribution, uniform on [-1, 1]^5).
    action_rng = np.random.default_rng([seed, 1])
    low, high = env.action_space.low, env.action_space.high
    p_random = P_RANDOM_ACTION[env_name] if dataset == "noisy" else 0.0
    retries = 0
    first = True
    while True:
        ob, info = env.reset(seed=seed if first else None)  # a retry continues the same random streams
        first = False
        agents = make_oracles(env_name, dataset, env)
        p_stack = stack_probability(env_name)
        xi = float(np.random.uniform(0, MARKOV_NOISE)) if dataset == "noisy" else 0.0
        agent = agents[info["privileged/target_task"]]
        agent.reset(ob, info)
        obs, qpos, qvel, buttons, actions = [ob], [info["qpos"]], [info["qvel"]], [info.get("button_states")], []
        for _ in range(episode_length - 1):
            if np.random.rand() < p_random:
                action = action_rng.uniform(low, high).astype(np.float64)
            else:
                action = np.asarray(agent.select_action(ob, info), dtype=np.float64)
                if dataset == "noisy":
                    action = action + np.random.normal(0, [xi, xi, xi, xi * 3, xi * 10], action.shape)
            action = np.clip(action, -1, 1)
            ob, _, terminated, truncated, info = env.step(action)
            if agent.done:  # a new target when the oracle has finished the current one
                agent_ob, agent_info = env.unwrapped.set_new_target(p_stack=p_stack)
                agent = agents[agent_info["privileged/target_task"]]
                agent.reset(agent_ob, agent_info)
            actions.append(action)
            obs.append(ob)
            qpos.append(info["qpos"])
            qvel.append(info["qvel"])
            buttons.append(info.get("button_states"))
        if env_name != "scene" or scene_is_healthy(np.asarray(qpos)):
            break
        retries += 1
    if own:
        env.close()
    out = {
        "observations": np.asarray(obs, dtype=np.float32),
        "actions": np.asarray(actions, dtype=np.float32),
        "qpos": np.asarray(qpos, dtype=np.float64),
        "qvel": np.asarray(qvel, dtype=np.float64),
        "retries": retries,
    }
    if buttons[0] is not None:
        out["button_states"] = np.asarray(buttons, dtype=np.int64)
    return out


__all__ = [
    "DATASET_TYPES", "ENVS", "EPISODE_LENGTH", "INSTALL_HINT", "NUM_TASKS", "OGBenchSparseEnv", "PREFIX", "TaskJudge",
    "episode_seed", "generate_episode", "make_collection_env", "make_ogbench_env", "make_oracles", "ogbench_env_id",
    "parse_env_id", "singletask_id",
]
