"""The end-to-end demo: built-in dataset -> train -> evaluate -> a table beside the data's own rates."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from .config import preset
from .data import EpisodeStore
from .envs import BUILTIN_ENV_ID
from .envs.builtin_dataset import make_builtin_dataset
from .evaluate import evaluate, evaluate_policy, random_policy
from .policy import QTPolicy
from .train import train


def run_demo(args) -> dict:
    out = Path(args.out)
    t0 = time.perf_counter()
    data_dir = out / "dataset"
    print(f"[1/3] making the built-in dataset ({args.demos} demonstrations + {args.autonomous} autonomous episodes) in {data_dir}")
    ds = make_builtin_dataset(args.demos, args.autonomous, seed=args.seed)
    EpisodeStore.create(data_dir, ds)
    rates = ds.success_by_source()

    run_dir = out / "run"
    cfg = dataclasses.replace(preset(args.preset), dataset=data_dir, out=run_dir, seed=args.seed, eval_every=0, eval_episodes=0)
    print(f"[2/3] training ({args.preset} preset, {cfg.steps} steps) in {run_dir}")
    if (run_dir / "checkpoints" / "last").exists():
        cfg = dataclasses.replace(cfg, resume=True)  # re-running the demo continues (or reuses) the run
    final = train(cfg)

    print(f"[3/3] evaluating over {args.eval_episodes} episodes")
    policy = QTPolicy.from_checkpoint(final)
    learned = evaluate_policy(policy, BUILTIN_ENV_ID, args.eval_episodes)
    rand = evaluate(random_policy(BUILTIN_ENV_ID), BUILTIN_ENV_ID, args.eval_episodes)
    rows = [
        ("data: demonstrations", rates.get("demonstration", (0, 0.0))),
        ("data: autonomous episodes", rates.get("autonomous", (0, 0.0))),
        ("random policy", (args.eval_episodes, rand["success_rate"])),
    ]
    if policy.prior is not None:  # the preset's BC prior (train --prior): each part alone, on the same episodes
        alone = evaluate_policy(policy.prior, BUILTIN_ENV_ID, args.eval_episodes)["success_rate"]
        values = evaluate_policy(QTPolicy.from_checkpoint(final, prior_weight=0.0), BUILTIN_ENV_ID, args.eval_episodes)["success_rate"]
        rows += [("BC prior alone (demonstrations)", (args.eval_episodes, alone)),
                 ("Q-Transformer values alone (--prior-weight 0)", (args.eval_episodes, values))]
    rows.append(("Q-Transformer (greedy, learned)", (args.eval_episodes, learned["success_rate"])))
    lines = ["| policy | episodes | success rate |", "|---|---|---|"] + [f"| {n} | {k} | {r:.3f} |" for n, (k, r) in rows]
    table = "\n".join(lines)
    print("\n" + table + "\n")
    result = {
        "table": [{"policy": n, "episodes": k, "success_rate": r} for n, (k, r) in rows],
        "checkpoint": str(final),
        "seconds": time.perf_counter() - t0,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"done in {result['seconds']:.0f} s; results in {out / 'results.json'}, checkpoint {final}")
    return result
