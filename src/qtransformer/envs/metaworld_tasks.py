"""The former single module of the MetaWorld adapter, kept so that existing imports and
`python -m qtransformer.envs.metaworld_tasks` keep working. The code lives in two modules: the
environment and the scripted experts in envs/metaworld.py, the autonomous recipes and the dataset maker
in envs/metaworld_dataset.py; new code imports from those."""

from .metaworld import (
    DEFAULT_MAX_STEPS,
    INSTALL_HINT,
    MT10_INSTRUCTIONS,
    MT10_TASKS,
    NUM_VARIATIONS,
    MetaWorldSparseEnv,
    instruction_for,
    make_metaworld_env,
    metaworld_env_id,
    noisy_expert,
    scripted_expert,
    tasks_from_env_id,
)
from .metaworld_dataset import (
    DEFAULT_PERTURB_SEVERITY,
    DEFAULT_REPLAY_NOISE,
    RECIPES,
    REPLAY_CORRELATION,
    main,
    make_metaworld_dataset,
    paper_mix_autonomous,
    perturbed_policy,
    replay_policy,
    success_table,
)

if __name__ == "__main__":
    main()


__all__ = [
    "DEFAULT_MAX_STEPS", "DEFAULT_PERTURB_SEVERITY", "DEFAULT_REPLAY_NOISE", "INSTALL_HINT", "MT10_INSTRUCTIONS",
    "MT10_TASKS", "MetaWorldSparseEnv", "NUM_VARIATIONS", "RECIPES", "REPLAY_CORRELATION", "instruction_for", "main",
    "make_metaworld_dataset", "make_metaworld_env", "metaworld_env_id", "noisy_expert", "paper_mix_autonomous",
    "perturbed_policy", "replay_policy", "scripted_expert", "success_table", "tasks_from_env_id",
]
