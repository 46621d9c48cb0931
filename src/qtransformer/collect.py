"""Collect new episodes with a trained policy (with exploration) and append them to a dataset.

The paper's loop: deploy the policy, record its successes and failures as autonomous episodes, and
retrain on the grown dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from .data import EpisodeDataset, append_episodes
from .envs.rollout import rollout
from .evaluate import EVAL_SEED_OFFSET
from .policy import QTPolicy

# Collection seeds start here: apart from the built-in generator's and from evaluation's.
COLLECT_SEED_OFFSET = 20_000_000


def check_can_append(into: Path) -> None:
    """Refuse, before any episode is run, a dataset folder that cannot be appended to (or created)."""
    from .data.store import check_can_write

    check_can_write(into, "--into", append=True)


def collect(
    policy: QTPolicy,
    into: Path,
    episodes: int,
    env_id: Optional[str] = None,
    epsilon: float = 0.1,
    temperature: float = 0.0,
    seed: int = 0,
    task: Optional[int] = None,
    source: str = "autonomous",
    progress: bool = True,
    instruction: Optional[str] = None,
) -> dict:
    """Run `episodes` episodes of `policy` in `env_id` and append them to the dataset `into`.

    A language-conditioned policy acts on `instruction` (by default its training instruction for the
    task), and the episodes record that text as their instruction.

    Episode i resets with seed 20_000_000 + seed + i; exploration draws from a generator seeded with
    `seed`, so a collection is repeatable. Returns counts and the collected episodes' success rate.
    """
    env_id = env_id or policy.env_id
    if not env_id:
        raise ValueError("this checkpoint records no environment; pass --env")
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if not 0.0 <= epsilon <= 1.0 or temperature < 0:
        raise ValueError(f"need 0 <= epsilon <= 1 and temperature >= 0, got {epsilon}, {temperature}")
    assert COLLECT_SEED_OFFSET != EVAL_SEED_OFFSET
    if policy.action_chunk > 1:
        raise ValueError(f"this policy acts in chunks of {policy.action_chunk} steps (--algo.action-chunk); collection records single "
                         "steps, so collect with a policy trained with --algo.action-chunk 1")
    check_can_append(into)
    env = policy.make_env(env_id)
    generator = torch.Generator().manual_seed(seed)
    task_names = list(policy.meta.get("task_names") or ["default"])
    instruction = policy.instruction_for_env(env_id, task, instruction)
    given = task
    task = policy.task_for_env(env_id, task)  # the model's task input: None for a language-conditioned policy
    name = policy.env_task_name(env_id)
    if task is not None:
        task_id = int(task)
    elif given is not None:
        task_id = int(given)
    else:  # the episodes' task: the one the environment names, else the first
        task_id = task_names.index(name) if name in task_names else 0

    def act(obs):
        return policy.act(obs, task=task, epsilon=epsilon, temperature=temperature, generator=generator, instruction=instruction)

    recorded = []
    for i in tqdm(range(episodes), desc="collect", disable=not progress, leave=False):
        ep = rollout(env, act, seed=COLLECT_SEED_OFFSET + seed + i, frames=policy.frames)
        ep["source"] = source
        ep["task"] = task_id
        if instruction is not None:
            ep["instruction"] = instruction
        recorded.append(ep)
    env.close()
    low, high = policy.discretizer.low, policy.discretizer.high
    for ep in recorded:  # bin centres lie inside the bounds; clip float noise all the same
        ep["actions"] = np.clip(ep["actions"], low, high).astype(np.float32)
    new = EpisodeDataset.from_episodes(recorded, low, high, env_id=env_id, task_names=task_names)
    store = append_episodes(into, new)
    success = float(new.episode_success().mean())
    return {"episodes": episodes, "success_rate": success, "steps": new.num_steps, "dataset_episodes": store.num_episodes}
