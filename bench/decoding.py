"""One trained network, several decoding rules: greedy success of the same checkpoints under each.

    python -m bench.decoding --runs RUN [RUN ...] --settings tau=0 tau=0.9 lambda=0.01 [--baselines RUN ...]
        [--env ENV_ID] [--episodes 50] [--jobs 2] --out bench/results/decoding

Decoding rules change nothing in training, so they can be compared on the same weights: each --runs
folder (a training run with an imitation head, e.g. `bench.ogbench --methods qt_support_tau09`) is
evaluated under every --settings entry:

- `trained`: the rule the run was trained with (its stored --algo.support-tau and --algo.prior-weight);
- `tau=T`: support-constrained argmax at tau T, prior weight 0 (tau=0 is the paper's plain argmax,
  tau=1 the imitation head's argmax);
- `lambda=L`: argmax of Q + L log p, support tau 0; `tau=T,lambda=L` both.

--baselines folders (e.g. BC runs on the same data) are evaluated as trained, on the same episodes.
Every evaluation uses `qtransformer eval`'s seeds (the first --episodes of them from --seed, the same
for every run and rule) and the environment each run was trained on unless --env. Each result is its own JSON
under --out/evals and is reused when the command is repeated. Prints a table (mean and std over the
runs, and per run, in the order of --runs), writes summary.json and table.md. The tests run it at a
tiny size (tests/test_bench_decoding.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from bench import compare


@dataclasses.dataclass
class Args:
    runs: tuple[Path, ...]
    """Run folders (or checkpoints) of networks with an imitation head, evaluated under every setting."""
    settings: tuple[str, ...] = ("trained", "tau=0", "tau=1")
    """Decoding rules: 'trained', 'tau=T', 'lambda=L' or 'tau=T,lambda=L'."""
    baselines: tuple[Path, ...] = ()
    """Run folders evaluated as trained only (other methods on the same data)."""
    env: Optional[str] = None
    """Environment id; by default each run's own."""
    episodes: int = 50
    """Evaluation episodes per run and rule (eval's seeds 10000000 + seed + i, i < episodes)."""
    seed: int = 0
    """Offset of the evaluation seeds (`qtransformer eval --seed`): another offset gives other episodes, e.g.
    validation episodes kept apart from a benchmark's own (its results are files of their own)."""
    jobs: int = 2
    """Evaluations side by side, one CPU thread each."""
    out: Path = Path("bench/results/decoding")
    """Results folder."""

    def __post_init__(self) -> None:
        for s in self.settings:
            parse_setting(s)  # a bad entry stops here, before any evaluation
        if self.episodes < 1:
            raise SystemExit(f"--episodes must be >= 1, got {self.episodes}")
        if self.jobs < 1:
            raise SystemExit(f"--jobs must be >= 1, got {self.jobs}")
        for r in (*self.runs, *self.baselines):
            if not Path(r).exists():
                raise SystemExit(f"{r}: no such run folder; pass the folders of finished training runs")


def parse_setting(text: str) -> Optional[dict]:
    """'trained' -> None; 'tau=0.9' / 'lambda=0.01' / 'tau=0.5,lambda=0.01' -> {support_tau, prior_weight}."""
    if text == "trained":
        return None
    out = {"support_tau": 0.0, "prior_weight": 0.0}
    for part in text.split(","):
        m = re.fullmatch(r"(tau|lambda)=([0-9.eE+-]+)", part.strip())
        if m is None:
            raise SystemExit(f"--settings: cannot read {text!r}; write 'trained', 'tau=0.9', 'lambda=0.01' or 'tau=0.5,lambda=0.01'")
        value = float(m.group(2))
        if m.group(1) == "tau":
            if not 0.0 <= value <= 1.0:
                raise SystemExit(f"--settings {text!r}: tau must be in [0, 1]")
            out["support_tau"] = value
        else:
            if value < 0:
                raise SystemExit(f"--settings {text!r}: lambda must be >= 0")
            out["prior_weight"] = value
    return out


def run_name(path: Path) -> str:
    """A readable, unique-enough name: the last three parts of the run's path, e.g. task1-qt_support_tau09-seed0."""
    return "-".join(Path(path).resolve().parts[-3:])


def evaluate_one(spec: dict) -> dict:
    import torch

    from qtransformer.evaluate import evaluate_policy
    from qtransformer.fileio import atomic_write_text
    from qtransformer.policy import QTPolicy

    torch.set_num_threads(1)
    start = time.time()
    decoding = spec["decoding"] or {}
    policy = QTPolicy.from_checkpoint(spec["run"], **decoding)
    result = evaluate_policy(policy, spec["env"], spec["episodes"], seed=spec.get("seed", 0))
    out = {"run": spec["run"], "setting": spec["setting"], "episodes": spec["episodes"], "seed": spec.get("seed", 0), "env_id": result["env_id"],
           "support_tau": policy.support_tau, "prior_weight": policy.prior_weight, "success_rate": result["success_rate"],
           "mean_length": result.get("mean_length"), "wall_s": time.time() - start}  # a multi-task result has per_task instead
    if "per_task" in result:  # a multi-task environment: each task's success rate too
        out["per_task"] = {t: r["success_rate"] for t, r in result["per_task"].items()}
    Path(spec["result"]).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(spec["result"]), json.dumps(out, indent=1))
    return out


def specs_for(args: Args) -> list[dict]:
    specs = []
    pairs = [(r, s) for r in args.runs for s in args.settings] + [(r, "trained") for r in args.baselines]
    for run, setting in pairs:
        name = f"{run_name(run)}__{setting.replace(',', '_')}" + (f"__seed{args.seed}" if args.seed else "")
        specs.append({"run": str(run), "setting": setting, "decoding": parse_setting(setting), "env": args.env,
                      "episodes": args.episodes, "seed": args.seed, "result": str(args.out / "evals" / f"{name}.json")})
    return specs


def main(args: Args) -> dict:
    specs = specs_for(args)
    done, todo = [], []
    for s in specs:
        p = Path(s["result"])
        old = json.loads(p.read_text()) if p.exists() else None
        if old is not None and old["episodes"] == s["episodes"] and old.get("seed", 0) == s["seed"]:
            done.append(old)
        else:
            todo.append(s)
    print(f"{len(specs)} evaluations, {len(done)} done before, {len(todo)} to do, {args.jobs} at a time", flush=True)
    results = done + compare.run_in_pool(evaluate_one, todo, args.jobs, lambda s: f"{run_name(s['run'])} {s['setting']}")

    rate = {(r["run"], r["setting"]): r["success_rate"] for r in results}

    def row(runs: tuple[Path, ...], setting: str) -> dict:
        per_run = {run_name(x): rate[(str(x), setting)] for x in runs}  # in the order of --runs
        rates = list(per_run.values())
        return {"mean": float(np.mean(rates)), "std": float(np.std(rates)), "per_run": per_run}

    table = {s: row(args.runs, s) for s in args.settings}
    base = {run_name(b): row((b,), "trained") for b in args.baselines}
    summary = {"command": " ".join(["python -m bench.decoding", *sys.argv[1:]]), "episodes": args.episodes,
               "settings": table, "baselines": base, "versions": compare.versions()}
    lines = [f"Greedy success over {args.episodes} evaluation episodes per run (mean ± std over {len(args.runs)} runs; per run):", "",
             "| decoding | success | per run |", "|---|---|---|"]
    for s, r in table.items():
        lines.append(f"| {s} | {100 * r['mean']:.0f} ± {100 * r['std']:.0f} | {', '.join(f'{100 * v:.0f}' for v in r['per_run'].values())} |")
    if base:
        rates = [r["mean"] for r in base.values()]
        lines.append(f"| baselines, as trained | {100 * np.mean(rates):.0f} ± {100 * np.std(rates):.0f} | {', '.join(f'{100 * v:.0f}' for v in rates)} |")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "table.md").write_text(text + "\n")
    return summary


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
