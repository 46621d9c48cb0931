"""Environments: the built-in PointReach3D task, registered with gymnasium on import."""

import gymnasium as gym

BUILTIN_ENV_ID = "qtransformer/PointReach3D-v0"
BUILTIN_IMAGE_ENV_ID = "qtransformer/PointReach3DImage-v0"

if BUILTIN_ENV_ID not in gym.registry:
    gym.register(id=BUILTIN_ENV_ID, entry_point="qtransformer.envs.point_reach:PointReach3DEnv")
if BUILTIN_IMAGE_ENV_ID not in gym.registry:
    gym.register(id=BUILTIN_IMAGE_ENV_ID, entry_point="qtransformer.envs.point_reach:PointReach3DImageEnv")


def is_multi_task(env_id: str) -> bool:
    """A MetaWorld id naming several tasks ("metaworld:mt10", "metaworld:a,b"): evaluated task by task."""
    if not env_id.startswith("metaworld:"):
        return False
    from .metaworld import tasks_from_env_id

    return len(tasks_from_env_id(env_id)) > 1


OWN_PREFIXES = ("metaworld:", "ogbench:")  # ids that make_env handles itself, not through gymnasium's module import


def env_id_from_file(env_id, path, field: str = "env_id", flag: str = "--env", error: type[Exception] = ValueError):
    """An environment id read from a file (a dataset's meta.json, a checkpoint's config.json), checked.

    gymnasium imports the module named before a colon ("module:Env-v0"): an id from a file must never
    run code, so such an id is refused; only one given on the command line (`flag`) may import. Our own
    prefixes ("metaworld:<task>", "ogbench:<id>", OWN_PREFIXES) import only that package, never a module
    the id names, and pass. Returns the id (None stays None)."""
    if env_id is None:
        return None
    if not isinstance(env_id, str):
        raise error(f"{path}: field '{field}' must be a string (a gymnasium id), got {env_id!r}; fix the file or pass {flag} ID")
    if ":" in env_id and not env_id.startswith(OWN_PREFIXES):
        module = env_id.split(":", 1)[0]
        raise error(
            f"{path}: field '{field}' is '{env_id}', which would make gymnasium import the module '{module}'; ids read from "
            f"files never import modules: if you trust that module, pass the id on the command line ({flag} {env_id})"
        )
    return env_id


def make_env(env_id: str, **kwargs) -> gym.Env:
    """gymnasium.make, with our own environments registered first and a clear error for unknown ids.

    "metaworld:<task>" (e.g. "metaworld:reach-v3") makes that MetaWorld task with the sparse success
    reward (needs the sim extra); reset(seed=s) picks its variation s % 50; "metaworld:<task>?camera=corner&size=64"
    adds that camera's frames to the observations ("&render=fast": without shadows and multisampling). "ogbench:<id>" (e.g.
    "ogbench:cube-single-singletask-task1-v0") makes that OGBench single-task environment with the sparse
    success reward, ending at success (needs the ogbench extra; see docs/ogbench.md)."""
    if env_id.startswith("ogbench:"):
        from .ogbench import make_ogbench_env

        return make_ogbench_env(env_id, **kwargs)
    if env_id.startswith("metaworld:"):
        from .metaworld import make_metaworld_env, parse_env_id

        tasks, camera, image_size, render = parse_env_id(env_id)
        if len(tasks) != 1:
            raise ValueError(f"'{env_id}' names {len(tasks)} tasks; make one at a time with metaworld:<task>")
        return make_metaworld_env(tasks[0], seed=0, vary_task=True, camera=camera, image_size=image_size, render=render, **kwargs)
    try:
        return gym.make(env_id, disable_env_checker=True, **kwargs)
    except gym.error.Error as exc:
        raise ValueError(
            f"cannot make environment '{env_id}' ({exc}); the built-in task is '{BUILTIN_ENV_ID}'"
        ) from exc


__all__ = ["BUILTIN_ENV_ID", "BUILTIN_IMAGE_ENV_ID", "env_id_from_file", "is_multi_task", "make_env"]
