"""Environments: the built-in PointReach3D task, registered with gymnasium on import."""

import gymnasium as gym

BUILTIN_ENV_ID = "qtransformer/PointReach3D-v0"
BUILTIN_IMAGE_ENV_ID = "qtransformer/PointReach3DImage-v0"

if BUILTIN_ENV_ID not in gym.registry:
    gym.register(id=BUILTIN_ENV_ID, entry_point="qtransformer.envs.point_reach:PointReach3DEnv")
if BUILTIN_IMAGE_ENV_ID not in gym.registry:
    gym.register(id=BUILTIN_IMAGE_ENV_ID, entry_point="qtransformer.envs.point_reach:PointReach3DImageEnv")


def make_env(env_id: str, **kwargs) -> gym.Env:
    """gymnasium.make, with our own environments registered first and a clear error for unknown ids."""
    try:
        return gym.make(env_id, disable_env_checker=True, **kwargs)
    except gym.error.Error as exc:
        raise ValueError(
            f"cannot make environment '{env_id}' ({exc}); the built-in task is '{BUILTIN_ENV_ID}'"
        ) from exc


__all__ = ["BUILTIN_ENV_ID", "BUILTIN_IMAGE_ENV_ID", "make_env"]
