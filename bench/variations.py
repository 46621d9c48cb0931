"""Seen against held-out task variations: success of trained `bench.compare` runs on the MetaWorld
variations (object and goal placements) their dataset covers, and on variations it does not.

    python -m bench.variations [--root bench/results/compare] [--methods qtransformer bc_demos] [--seeds 0 1 2]

A variation counts as seen when one of the dataset's episodes starts from its initial observation
(MetaWorld resets a variation to the same state every time). `bench.compare` evaluates on fixed reset
seeds, which fall on seen variations for some tasks and held-out ones for others; this splits them.
Prints a table and writes JSON. Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def seen_variations(ds, task_id: int, name: str) -> tuple[list[int], list[int]]:
    """The variations of task `name` whose initial observation starts an episode of `ds`, and the others."""
    from qtransformer.envs import make_env
    from qtransformer.envs.metaworld_tasks import NUM_VARIATIONS

    starts = ds.observations[ds.episode_starts[:-1][ds.episode_task == task_id]]  # (E_task, obs_dim)
    env = make_env(f"metaworld:{name}")
    seen, held_out = [], []
    for v in range(NUM_VARIATIONS):
        obs0 = env.reset(seed=v)[0]
        (seen if np.abs(starts - obs0).max(axis=1).min() < 1e-5 else held_out).append(v)
    return seen, held_out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("bench/results/compare"), help="a bench.compare results folder")
    p.add_argument("--dataset", default="paper_mix_demos8_auto92", help="the dataset's folder name under ROOT/datasets")
    p.add_argument("--methods", nargs="+", default=["qtransformer", "bc_demos"], help="our methods (d3rlpy's are not saved as policies)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=8, help="variations per group and task")
    a = p.parse_args()

    import torch

    from qtransformer import QTPolicy
    from qtransformer.data import EpisodeStore
    from qtransformer.evaluate import run_episodes

    torch.set_num_threads(1)
    ds = EpisodeStore.open(a.root / "datasets" / a.dataset).to_dataset()
    groups = {name: seen_variations(ds, t, name) for t, name in enumerate(ds.task_names)}
    results: dict = {}
    for method in a.methods:
        for seed in a.seeds:
            policy = QTPolicy.from_checkpoint(a.root / "runs" / a.dataset / method / f"seed{seed}")
            for t, name in enumerate(ds.task_names):
                for group, variations in zip(("seen", "held-out"), groups[name], strict=True):
                    episodes = run_episodes(lambda obs: policy.act(obs, task=t), f"metaworld:{name}", variations[: a.episodes])  # noqa: B023 - run at once
                    rate = float(np.mean([e["success"] for e in episodes]))
                    results.setdefault(method, {}).setdefault(name, {}).setdefault(group, []).append(rate)
    short = [n.removesuffix("-v3") for n in ds.task_names]
    print(f"{a.dataset}: success on seen / held-out variations ({a.episodes} each per task), mean over seeds {a.seeds}")
    print("| method | " + " | ".join(short) + " | all |")
    print("|---|" + "---|" * (len(short) + 1))
    for method, per_task in results.items():
        cells = [f"{np.mean(d['seen']):.2f} / {np.mean(d['held-out']):.2f}" for d in per_task.values()]
        overall = [np.mean([np.mean(d[g]) for d in per_task.values()]) for g in ("seen", "held-out")]
        print(f"| {method} | " + " | ".join(cells) + f" | {overall[0]:.2f} / {overall[1]:.2f} |")
    out = a.root / f"variations_{a.dataset}.json"
    out.write_text(json.dumps({"seen_variations": {n: g[0] for n, g in groups.items()}, "success": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
