"""MetaWorld (v3) tasks with a sparse success reward, and MetaWorld's scripted experts.

MetaWorld is an optional extra (`pip install -e '.[sim]'`): it is imported lazily, inside the functions
that need it, so the core package never imports it. See docs/metaworld.md; the dataset recipes and the
dataset maker are in envs/metaworld_dataset.py.

- `make_metaworld_env(name, seed)`: one task ("reach-v3", ...) with one task variation (object and goal
  placement, one of MetaWorld's 50 per task) chosen by `seed`; reward 1.0 and terminated on the first
  step with `info["success"]`, else 0.0; truncated (a timeout) after `max_steps` steps. Observations are
  MetaWorld's 39-d state as float32 (with the goal visible, as in the MT benchmarks), actions Box(-1, 1, (4,)).
  With `vary_task=True`, `reset(seed=s)` picks variation `s % 50` instead, so a dataset covers them all.
  With `camera="corner"` (any of CAMERAS) observations are {"state": the 39 floats, "image": (S, S, 3)
  uint8}, the camera's frame rendered offscreen (OSMesa unless MUJOCO_GL says otherwise) at every step;
  `render="fast"` draws it without shadows and multisampling (RENDER_MODES: about 6x faster in software).
- ids: "metaworld:<task>", "metaworld:mt10" or "metaworld:<a>,<b>", with "?camera=<name>&size=<S>" for
  camera observations and "&render=fast" for fast frames (parse_env_id, metaworld_env_id: the one place
  they are read and written).
- `scripted_expert(name)`: MetaWorld's scripted policy for the task, as a callable obs -> action;
  `noisy_expert(name, rng)`, the demonstrator: the same with small Gaussian action noise.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, NamedTuple, Optional

import gymnasium as gym
import numpy as np

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


CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")  # MetaWorld's named cameras
DEFAULT_IMAGE_SIZE = 64
# How camera frames are drawn. "full": MetaWorld's scene as shipped (a 4096x4096 shadow map for its one
# shadow-casting light, 4x multisampling). "fast": no shadows and no multisampling, the same scene,
# cameras and geometry otherwise. In MuJoCo's software renderer (OSMesa, a CPU machine) the shadow map
# and the multisampling are most of a frame's cost whatever the image size: `python -m bench.camera`.
RENDER_MODES = ("full", "fast")


class MetaWorldId(NamedTuple):
    """What a MetaWorld env id names (parse_env_id)."""

    tasks: list[str]
    camera: Optional[str]
    image_size: int
    render: str  # one of RENDER_MODES


def check_camera(camera: Optional[str], image_size: int, render: str = "full") -> None:
    """Raise ValueError naming the fix for an unknown camera, an image size outside 16..512, an unknown render
    mode, or a render mode other than "full" without a camera (only camera frames are drawn)."""
    if camera is not None and camera not in CAMERAS:
        raise ValueError(f"unknown MetaWorld camera '{camera}'; choose one of {', '.join(CAMERAS)}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 16 <= image_size <= 512:
        raise ValueError(f"image size must be a whole number of pixels from 16 to 512, got {image_size!r}")
    if render not in RENDER_MODES:
        raise ValueError(f"unknown render mode {render!r}; choose one of {', '.join(RENDER_MODES)}")
    if render != "full" and camera is None:
        raise ValueError(f"render mode {render!r} draws camera frames, so it needs camera too (--camera NAME, or camera=<name> in an env id)")


def metaworld_env_id(tasks: list[str], camera: Optional[str] = None, image_size: int = DEFAULT_IMAGE_SIZE, render: str = "full") -> str:
    """The env_id recorded in a dataset: "metaworld:<task>", "metaworld:mt10", or "metaworld:<a>,<b>";
    with a camera, "?camera=<name>&size=<S>" after it, and "&render=fast" for fast frames ("full" is
    not written, so the ids of earlier datasets are unchanged)."""
    if len(tasks) == 1:
        base = f"metaworld:{tasks[0]}"
    elif sorted(tasks) == sorted(MT10_TASKS):
        base = "metaworld:mt10"
    else:
        base = "metaworld:" + ",".join(tasks)
    if camera is None:
        return base
    return f"{base}?camera={camera}&size={int(image_size)}" + ("" if render == "full" else f"&render={render}")


def parse_env_id(env_id: str) -> MetaWorldId:
    """The inverse of metaworld_env_id: -> (tasks, camera or None, image size, render mode). "metaworld:mt10"
    -> the MT10 task list, "metaworld:a,b" -> [a, b]; "metaworld:a?camera=corner&size=64" -> ([a], "corner",
    64, "full"); "...&render=fast" -> render "fast"."""
    if not env_id.startswith("metaworld:"):
        raise ValueError(f"'{env_id}' is not a MetaWorld id (metaworld:<task>, metaworld:mt10 or metaworld:<a>,<b>)")
    rest, _, query = env_id[len("metaworld:"):].partition("?")
    tasks = list(MT10_TASKS) if rest == "mt10" else [t for t in rest.split(",") if t]
    options = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or key not in ("camera", "size", "render"):
            raise ValueError(f"'{env_id}': unknown option '{part}'; a MetaWorld id takes ?camera=<name>&size=<pixels>[&render=fast]")
        options[key] = value
    camera = options.get("camera")
    try:
        size = int(options.get("size", DEFAULT_IMAGE_SIZE))
    except ValueError:
        raise ValueError(f"'{env_id}': size must be a whole number of pixels, got '{options['size']}'") from None
    if "size" in options and camera is None:
        raise ValueError(f"'{env_id}': size= needs camera=<name> too")
    render = options.get("render", "full")
    try:
        check_camera(camera, size, render)
    except ValueError as exc:
        raise ValueError(f"'{env_id}': {exc}") from None
    return MetaWorldId(tasks, camera, size, render)


def tasks_from_env_id(env_id: str) -> list[str]:
    """The tasks a MetaWorld id names (parse_env_id)."""
    return parse_env_id(env_id)[0]


def single_task_env_ids(env_id: str) -> list[str]:
    """One id per task of a MetaWorld id, each keeping its camera (and render mode): "metaworld:a,b?camera=corner&size=64" ->
    ["metaworld:a?camera=corner&size=64", "metaworld:b?camera=corner&size=64"]."""
    tasks, camera, size, render = parse_env_id(env_id)
    return [metaworld_env_id([t], camera, size, render) for t in tasks]


class MetaWorldSparseEnv(gym.Env):
    """One MetaWorld task with the sparse success reward (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(
        self, name: str, seed: int = 0, max_steps: int = DEFAULT_MAX_STEPS, vary_task: bool = False, render_mode: Optional[str] = None,
        camera: Optional[str] = None, image_size: int = DEFAULT_IMAGE_SIZE, render: str = "full",
    ):
        check_camera(camera, image_size, render)
        metaworld = _import_metaworld()
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if name not in metaworld.MT1.ENV_NAMES:
            close = [n for n in metaworld.MT1.ENV_NAMES if name.split("-")[0] in n][:5]
            raise ValueError(f"unknown MetaWorld task '{name}'; v3 names look like 'reach-v3' (similar: {close})")
        self.name, self.seed, self.max_steps, self.vary_task = name, int(seed), int(max_steps), vary_task
        benchmark = metaworld.MT1(name, seed=self.seed)  # 50 variations, drawn from `seed`
        self._tasks = list(benchmark.train_tasks)
        self.render_mode, self.camera = render_mode, camera
        if camera is not None:  # observations carry this camera's frame; videos show the same frames
            _choose_renderer()
            self._env = benchmark.train_classes[name](render_mode="rgb_array", camera_name=camera, width=image_size, height=image_size)
            if render == "fast":
                _fast_frames(self._env.model)
        elif render_mode is None:
            self._env = benchmark.train_classes[name]()
        else:  # offscreen frames from the "corner" camera, for videos
            _choose_renderer()
            self._env = benchmark.train_classes[name](render_mode=render_mode, camera_name="corner", width=128, height=128)
        self._env.max_path_length = max(self.max_steps, 1)  # we cut episodes ourselves
        self.variation = 0
        self._env.set_task(self._tasks[self.variation])
        state_space = gym.spaces.Box(-np.inf, np.inf, shape=(39,), dtype=np.float32)
        self.observation_space = state_space if camera is None else gym.spaces.Dict(
            {"state": state_space, "image": gym.spaces.Box(0, 255, shape=(image_size, image_size, 3), dtype=np.uint8)}
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self._t = 0

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if self.vary_task and seed is not None:
            self.variation = int(seed) % len(self._tasks)
            self._env.set_task(self._tasks[self.variation])
        obs, info = self._env.reset()
        self._t = 0
        return self._observation(obs), {"success": False, "variation": self.variation}

    def _observation(self, state) -> "np.ndarray | dict":
        state = np.asarray(state, dtype=np.float32)  # (39,)
        if self.camera is None:
            return state
        return {"state": state, "image": self._frame()}  # image (S, S, 3) uint8

    def _frame(self) -> np.ndarray:
        try:
            frame = self._env.render()
        except Exception as exc:  # noqa: BLE001 - no OpenGL for offscreen rendering
            raise RuntimeError(
                f"MuJoCo could not render offscreen with MUJOCO_GL={os.environ.get('MUJOCO_GL')} ({exc}); "
                "install Mesa's software renderer (Debian: apt-get install libosmesa6) or set MUJOCO_GL=egl on a GPU machine"
            ) from exc
        return np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)[::-1])  # MuJoCo's rows run bottom-up

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(4), -1.0, 1.0)
        obs, _, _, _, info = self._env.step(a)
        self._t += 1
        success = bool(info.get("success", 0.0))
        truncated = (not success) and self._t >= self.max_steps
        info = dict(info, success=success)
        return self._observation(obs), float(success), success, truncated, info

    def render(self):
        if self.render_mode is None and self.camera is None:
            return None
        return self._frame()

    def close(self):
        self._env.close()


def _fast_frames(model) -> None:
    """Draw this MuJoCo model's frames without shadows and multisampling (render mode "fast"). MuJoCo
    reads these settings when the offscreen context is made, at the first frame, so this must come before it."""
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    model.light_castshadow[:] = 0


def make_metaworld_env(
    name: str, seed: int = 0, max_steps: int = DEFAULT_MAX_STEPS, vary_task: bool = False, render_mode: Optional[str] = None,
    camera: Optional[str] = None, image_size: int = DEFAULT_IMAGE_SIZE, render: str = "full",
) -> gym.Env:
    """A MetaWorld v3 task ("reach-v3") with the sparse success reward; see MetaWorldSparseEnv."""
    return MetaWorldSparseEnv(
        name, seed=seed, max_steps=max_steps, vary_task=vary_task, render_mode=render_mode, camera=camera, image_size=image_size, render=render,
    )


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


__all__ = [
    "CAMERAS", "DEFAULT_IMAGE_SIZE", "check_camera", "parse_env_id", "single_task_env_ids",
    "DEFAULT_MAX_STEPS", "INSTALL_HINT", "MT10_INSTRUCTIONS", "MT10_TASKS", "MetaWorldSparseEnv", "NUM_VARIATIONS",
    "instruction_for", "make_metaworld_env", "metaworld_env_id", "noisy_expert", "scripted_expert", "tasks_from_env_id",
]
