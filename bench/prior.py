"""Q-Transformer's values decoded with a BC run as prior, in the paper's regime: the setting chosen on
validation variations, read on the held-out ones.

    python -m bench.prior --regime bench/results/regime_20k [--data main] [--values qtransformer] [--seeds 5]
        [--settings lambda=0.003 lambda=0.01 ...] [--validation-episodes 20] [--episodes 50] [--jobs 2]

Reads the runs a `bench.regime` benchmark keeps (`--regime` is its --out): for each seed, the final
policy of `qtransformer` (the values) and of `bc_demos` on the same dataset and seed (the prior), and
decodes the values with the prior's probabilities (`QTPolicy(..., prior=...)`, `qtransformer eval
--prior-checkpoint`). Each --settings entry (bench.decoding's syntax: tau=T, lambda=L, tau=T,lambda=L) is
evaluated on --validation-episodes episodes per task of MT1 benchmark seed --validation-seed (neither
the training data's nor the held-out set's), beside two references that are not candidates: tau=0 (the
values alone) and tau=1 (the prior alone). The candidate with the highest mean over the seeds is chosen
(a tie goes to the weaker pull: the smaller tau, then the smaller lambda) and evaluated on the
held-out episodes of every figure of `bench.regime` (--episodes per task), where it is read against both
runs' own figures on the same episodes (`bench.regime --final-episodes N`, which must have run): paired
differences per seed with their standard error.

`--values M` decodes another Q-Transformer method's runs instead of `qtransformer`'s (an option trained
without a prior, e.g. qt_nstep3_values). `--prior bc_all` (or bc_filtered) takes the BC runs on all the
data (or on the successful episodes) as the prior instead. Where the values' runs carry their own prior
(the `default` preset trains a BC prior inside the run: on the demonstrations with `train --prior auto`,
its setting from 2026-12-06; on the successful episodes with `auto-successful`, since 2026-12-07), their
own held-out figure is the values decoded with that prior, and the table adds that prior alone on the
same held-out episodes (with `auto`, BC on the demonstrations: the issue's baseline, read from the same
runs), paired against the run. `--data scale_10x --prior-data main` decodes the data-scaling runs with
main's BC runs (bench.regime trains no BC on demonstrations there, and its demonstrations are main's).
Each evaluation is its own JSON under REGIME/prior/evals, reused when asked again. Prints the tables and
writes REGIME/prior/summary.json and table.md (for another --data, under
REGIME/prior/<data>[_prior_<prior-data>]/). docs/benchmarks.md (the paper's regime) has the protocol and
the figures.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import tyro

from bench import compare, regime
from bench.decoding import parse_setting

SETTINGS = ("tau=0.01", "tau=0.03", "tau=0.1", "tau=0.3", "lambda=0.003", "lambda=0.01", "lambda=0.03")
REFERENCES = {"tau=0": "the values alone", "tau=1": "the prior alone"}
VALUES = "qtransformer"
PRIORS = ("bc_demos", "bc_all", "bc_filtered")  # bench.regime's BC methods


@dataclasses.dataclass
class Args:
    regime: Path
    """A bench.regime --out folder whose runs kept their final policies."""
    data: str = "main"
    """The dataset of the values' runs (a folder under runs/demos*_auto*/: main, no_auto_success, scale_10x, ...)."""
    prior: Literal["bc_demos", "bc_all", "bc_filtered"] = "bc_demos"
    """The BC method whose runs are the prior: on demonstrations (the protocol's), on all the data, or on
    the successful episodes."""
    values: str = VALUES
    """The method whose runs are the values (default: `qtransformer`, the `default` preset); e.g. an option
    trained without a prior such as qt_nstep3_values, decoded here as `default` decodes its own values."""
    prior_data: Optional[str] = None
    """The dataset of the prior's runs; default --data. BC on demonstrations learns from the same
    demonstrations on every dataset, so the data-scaling runs can take main's (bench.regime trains no
    bc_demos there)."""
    seeds: int = 5
    """Seed pairs (qtransformer seed s with bc_demos seed s)."""
    settings: tuple[str, ...] = SETTINGS
    """The candidate rules: 'tau=T', 'lambda=L' or 'tau=T,lambda=L'."""
    validation_seed: int = 9999
    """MT1 benchmark seed of the validation variations (not 0, the training data's; not 7777, the held-out set's)."""
    validation_episodes: int = 20
    """Validation episodes per task (variations 0..N-1 of --validation-seed)."""
    episodes: int = 50
    """Held-out episodes per task for the chosen rule (bench.regime's; its --final-episodes figures must exist at this size)."""
    jobs: int = 2
    """Evaluations side by side, one CPU thread each."""

    def __post_init__(self) -> None:
        for s in self.settings:
            parse_setting(s)  # a bad entry stops here
        if self.values not in regime.OURS or self.values in PRIORS:
            raise SystemExit(f"--values {self.values}: not a Q-Transformer method of bench.regime; choose from "
                             f"{', '.join(m for m in regime.OURS if m not in PRIORS)}")
        if self.validation_seed in (0, regime.EVAL_BENCHMARK_SEED):
            raise SystemExit(f"--validation-seed {self.validation_seed} is the training data's or the held-out set's benchmark seed; choose another")
        if min(self.validation_episodes, self.episodes, self.seeds, self.jobs) < 1:
            raise SystemExit("--validation-episodes, --episodes, --seeds and --jobs must be >= 1")


def run_json(args: Args, method: str, seed: int) -> Path:
    """The run JSON of `method` seed `seed` on its dataset (bench.regime's layout), or a SystemExit saying what is missing."""
    data = args.prior_data if method == args.prior and args.prior_data else args.data
    found = sorted(args.regime.glob(f"runs/demos*_auto*/{data}/{method}/seed{seed}.json"))
    if len(found) != 1:
        raise SystemExit(f"{args.regime}/runs: {'no' if not found else 'more than one'} {method} seed {seed} run on data '{data}'; "
                         f"run bench.regime with --methods {args.values} {args.prior} --seeds {args.seeds} first")
    return found[0]


def policy_success(values: str, prior: Optional[str], setting: Optional[dict], benchmark_seed: int, episodes: int) -> dict[str, float]:
    """Per task, the success of the values decoded with the prior under `setting` on `episodes` episodes
    (episode i: variation i % 50 of MT1 benchmark seed benchmark_seed + i // 50). prior None and setting
    None: the checkpoint `values` decoded as it was trained (a BC network: its own argmax)."""
    from qtransformer import QTPolicy

    policy = QTPolicy.from_checkpoint(values, **({} if prior is None else {"prior_checkpoint": prior}), **(setting or {}))
    names = list(policy.meta.get("task_names") or [])
    multi = policy.net.task_embedding is not None
    return {
        name: regime.heldout_success(lambda obs, t=t: policy.act(obs, task=t if multi else None), name, episodes, benchmark_seed)  # noqa: B023 - called within this iteration
        for t, name in enumerate(names)
    }


KEY = ("values", "prior", "setting", "benchmark_seed", "episodes", "seed")  # what names an evaluation (evaluate_one records each)


def evaluate_one(job: dict) -> dict:
    import torch

    from qtransformer.fileio import atomic_write_text

    torch.set_num_threads(1)
    start = time.time()
    per_task = policy_success(job["values"], job["prior"], parse_setting(job["setting"]), job["benchmark_seed"], job["episodes"])
    out = {k: job[k] for k in KEY} | {
        "success_rate": float(np.mean(list(per_task.values()))), "per_task": per_task, "code": compare.code_version(), "wall_s": time.time() - start}
    Path(job["result"]).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(job["result"]), json.dumps(out, indent=1))
    return out


def run_evaluations(jobs: list[dict], n_jobs: int, heading: str) -> list[dict]:
    """Each job's evaluation (evaluate_one), in the order of `jobs`: read from its result JSON where that
    holds the same values and prior, run (n_jobs at a time) where not."""
    def key(d: dict) -> tuple:
        return tuple(d[k] for k in KEY)

    done, todo = {}, []
    for job in jobs:
        path = Path(job["result"])
        old = json.loads(path.read_text()) if path.exists() else None
        if old is not None and (old["values"], old["prior"]) == (job["values"], job["prior"]):
            done[key(job)] = old
        else:
            todo.append(job)
    print(f"{heading}: {len(jobs)} evaluations, {len(done)} done before, {len(todo)} to do, {n_jobs} at a time", flush=True)
    for r in compare.run_in_pool(evaluate_one, todo, n_jobs, lambda j: f"{j['setting']} seed {j['seed']}"):  # in the order they finish
        done[key(r)] = r
    return [done[key(j)] for j in jobs]


def evaluate_all(args: Args, settings: list[str], benchmark_seed: int, episodes: int) -> dict[tuple[str, int], dict]:
    """(setting, seed) -> its evaluation, run where not on disk."""
    jobs = []
    for seed in range(args.seeds):
        values = regime.final_checkpoint(run_json(args, args.values, seed))
        prior = regime.final_checkpoint(run_json(args, args.prior, seed))
        if values is None or prior is None:
            raise SystemExit(f"{args.regime}: seed {seed}'s {args.values} or {args.prior} run kept no final policy")
        jobs += [{"values": str(values), "prior": str(prior), "setting": s, "benchmark_seed": benchmark_seed, "episodes": episodes, "seed": seed,
                  "result": str(args.regime / "prior" / "evals" / folder(args) / f"{s.replace(',', '_')}_b{benchmark_seed}_e{episodes}_s{seed}.json")}
                 for s in settings]
    results = run_evaluations(jobs, args.jobs, f"benchmark seed {benchmark_seed}, {episodes} episodes per task")
    return {(j["setting"], j["seed"]): r for j, r in zip(jobs, results, strict=True)}


def carried_priors(args: Args) -> Optional[list[Path]]:
    """Per seed, the BC prior the values' run carries (the `default` preset trains it inside the run,
    `train --prior auto` or `auto-successful`), or None where any seed's run carries none (runs from before the prior)."""
    from qtransformer.checkpoint import PRIOR_DIR

    found = []
    for seed in range(args.seeds):
        final = regime.final_checkpoint(run_json(args, args.values, seed))
        if final is None or not (final / "model" / PRIOR_DIR / "config.json").exists():
            return None
        found.append(final / "model" / PRIOR_DIR)
    return found


def evaluate_carried_priors(args: Args, priors: list[Path]) -> list[dict]:
    """Each seed's carried prior alone (its own argmax; with `--prior auto`, BC on the demonstrations; with `auto-successful`, on the successful episodes) on the held-out episodes."""
    b = regime.EVAL_BENCHMARK_SEED
    jobs = [{"values": str(path), "prior": None, "setting": "trained", "benchmark_seed": b, "episodes": args.episodes, "seed": seed,
             "result": str(args.regime / "prior" / "evals" / folder(args) / f"carried_prior_b{b}_e{args.episodes}_s{seed}.json")}
            for seed, path in enumerate(priors)]
    return run_evaluations(jobs, args.jobs, "the values' carried priors alone")


def folder(args: Args) -> str:
    """Where the evaluations and summary of --data (with --prior-data when it differs, --prior when not
    bc_demos, and --values when not qtransformer) go under REGIME/prior."""
    name = args.data if args.prior_data in (None, args.data) else f"{args.data}_prior_{args.prior_data}"
    name = name if args.prior == "bc_demos" else f"{name}_{args.prior}"
    return name if args.values == VALUES else f"{name}_{args.values}"


def choose(candidates: list[str], means: dict[str, float]) -> str:
    """The candidate with the highest mean; a tie goes to the weaker pull (smaller tau, then smaller lambda)."""
    def pull(s: str) -> tuple[float, float]:
        d = parse_setting(s)
        return d["support_tau"], d["prior_weight"]

    return max(candidates, key=lambda s: (round(means[s], 9), tuple(-x for x in pull(s))))


def paired(a: list[float], b: list[float]) -> dict:
    """Per-seed differences a - b in points, their mean and standard error."""
    diff = 100 * (np.asarray(a) - np.asarray(b))
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return {"per_seed": [round(float(x), 4) for x in diff], "mean": float(diff.mean()), "se": se}


def own_figures(args: Args, method: str) -> list[dict]:
    """Each seed's bench.regime --final-episodes figure of `method` at --episodes, or a SystemExit naming the command."""
    out = []
    for seed in range(args.seeds):
        fe = json.loads(run_json(args, method, seed).read_text()).get("final_eval") or {}
        if fe.get("episodes") != args.episodes or fe.get("evaluation") != regime.EVALUATION:
            raise SystemExit(f"{method} seed {seed} has no figure on {args.episodes} held-out episodes per task: "
                             f"run `python -m bench.regime --out {args.regime} ... --no-train --final-episodes {args.episodes}` first")
        out.append(fe)
    return out


def row(label: str, evals: list[dict]) -> dict:
    tasks = list(evals[0]["per_task"])
    return {"label": label, "mean": float(np.mean([e["success_rate"] for e in evals])), "per_seed": [e["success_rate"] for e in evals],
            "per_task": {t: float(np.mean([e["per_task"][t] for e in evals])) for t in tasks}}


def markdown_rows(rows: list[dict]) -> list[str]:
    tasks = list(rows[0]["per_task"])
    lines = [f"| rule | mean | per seed | {' | '.join(tasks)} |", "|---|---|---|" + "---|" * len(tasks)]
    for r in rows:
        lines.append(f"| {r['label']} | {r['mean']:.3f} | {', '.join(f'{x:.3f}' for x in r['per_seed'])} | "
                     + " | ".join(f"{r['per_task'][t]:.2f}" for t in tasks) + " |")
    return lines


def main(args: Args) -> None:
    candidates = list(dict.fromkeys(args.settings))
    validation = evaluate_all(args, [*REFERENCES, *[s for s in candidates if s not in REFERENCES]], args.validation_seed, args.validation_episodes)
    val_rows = {s: row(s if s not in REFERENCES else f"{s}: {REFERENCES[s]}", [validation[(s, k)] for k in range(args.seeds)])
                for s in [*REFERENCES, *candidates]}
    chosen = choose([s for s in candidates if s not in REFERENCES], {s: r["mean"] for s, r in val_rows.items()})
    values_own, prior_own = own_figures(args, args.values), own_figures(args, args.prior)  # before the held-out evaluation: fail early
    heldout = evaluate_all(args, [chosen], regime.EVAL_BENCHMARK_SEED, args.episodes)
    chosen_evals = [heldout[(chosen, k)] for k in range(args.seeds)]
    carried = carried_priors(args)  # runs of the preset since train --prior: their own figure is the values with this prior
    own_label = f"`{args.values}` as run: its values with the prior it carries" if carried else f"`{args.values}` alone"
    held_rows = [row(f"{chosen}, prior `{args.prior}`", chosen_evals), row(own_label, values_own), row(f"`{args.prior}` alone", prior_own)]
    a = [e["success_rate"] for e in chosen_evals]
    carried_evals = evaluate_carried_priors(args, carried) if carried else None
    if carried_evals:
        held_rows.append(row(f"the prior `{args.values}` carries, alone", carried_evals))
    summary = {
        "protocol": {"regime": str(args.regime), "data": args.data, "prior_data": args.prior_data or args.data, "seeds": args.seeds, "values": args.values, "prior": args.prior,
                     "candidates": candidates, "validation": f"variations 0..{args.validation_episodes - 1} of MT1 benchmark seed {args.validation_seed}",
                     "heldout": regime.EVALUATION, "heldout_episodes_per_task": args.episodes, "values_carry_prior": carried is not None},
        "validation": {s: r | {"candidate": s not in REFERENCES} for s, r in val_rows.items()},
        "chosen": chosen,
        "heldout": {r["label"]: r for r in held_rows},
        "paired": {f"against {args.values}": paired(a, [e["success_rate"] for e in values_own]),
                   f"against {args.prior}": paired(a, [e["success_rate"] for e in prior_own])},
    }
    if carried_evals:  # the preset as run against its own prior alone (with --prior auto: BC on the demonstrations, bit for bit)
        summary["paired"][f"{args.values} as run, against its carried prior"] = paired([e["success_rate"] for e in values_own], [e["success_rate"] for e in carried_evals])
    lines = [f"Validation ({summary['protocol']['validation']}, {args.validation_episodes} episodes per task, seeds 0-{args.seeds - 1}); "
             f"chosen: **{chosen}**", "", *markdown_rows(list(val_rows.values())), "",
             f"Held out ({args.episodes} episodes per task, {regime.EVALUATION})", "", *markdown_rows(held_rows), ""]
    for name, p in summary["paired"].items():
        lines.append(f"- {'' if name.startswith(args.values) else chosen + ' '}{name}: {p['mean']:+.1f} points (SE {p['se']:.1f}; per seed {', '.join(f'{x:+.1f}' for x in p['per_seed'])})")
    text = "\n".join(lines) + "\n"
    out = args.regime / "prior" / ("" if folder(args) == "main" else folder(args))
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text(text)
    print(text + f"wrote {out / 'summary.json'} and table.md", flush=True)


if __name__ == "__main__":
    main(tyro.cli(Args, args=sys.argv[1:]))
