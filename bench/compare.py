"""The paper's comparison on MetaWorld: Q-Transformer against BC, filtered BC, BC on demonstrations
only (the paper's RT-1 baseline), Decision Transformer, CQL and IQL (d3rlpy), and three ablations.

    python -m bench.compare --quick          # about 18 minutes on 2 cores: 1 seed, short runs
    python -m bench.compare                  # the full run, 70-100 minutes: 3 seeds, the data-scaling table
    python -m bench.compare --write-docs     # also put the tables into docs/benchmarks.md

Needs the `sim` and `bench` extras (`bash scripts/setup.sh --bench`). Every run writes its own result
JSON under --out and a finished run is skipped when the command is repeated, so an interrupted
benchmark resumes where it stopped. At the end it prints the tables and writes summary.json,
table.md, success.png (bars) and curves.png (success against training steps) into --out.

All methods see the same dataset (made by the same code as `qtransformer make-dataset metaworld`),
train for the same number of gradient steps at batch 256 (DT: d3rlpy's 64 sequences of 20 steps) and
are evaluated on the same reset seeds of the same environments, per task.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

# The tasks of the benchmark preset: five MT10 tasks the scripted experts solve reliably, with the
# paper's mix of data (about 8 % demonstrations, the rest noisy replays of them).
TASKS = "reach-v3,button-press-topdown-v3,drawer-open-v3,door-open-v3,window-open-v3"

# Method -> overrides of the backbone's TrainConfig (ours) or the d3rlpy algorithm's name.
OURS = {
    "qtransformer": {},
    "qtransformer_paper": {"algo": {"conservative_bins": 0, "head_init": "default", "act_with": "online"}, "prior": "none"},  # the `paper` preset's choices
    "bc_demos": {"algo": {"method": "bc"}, "source_mix": {"demonstration": 1.0}},
    "bc_all": {"algo": {"method": "bc"}},
    "bc_filtered": {"algo": {"method": "bc"}, "only_successful": True},
    "qt_no_conservative": {"algo": {"alpha": 0.0}},
    "qt_no_mc_bound": {"algo": {"mc_bound": False}},
    "qt_lse_regularizer": {"algo": {"regularizer": "cql"}},
    "qt_prior_targets": {"algo": {"prior_in_targets": True}},  # the TD targets' maxima at the prior-weighted choice
}
D3RLPY = ("cql", "iql", "dt")
OPTIONS = ("qt_prior_targets",)  # measured when named in --methods, not part of the default table
METHODS = tuple(OURS) + D3RLPY
LABELS = {
    "qtransformer": "Q-Transformer",
    "qtransformer_paper": "Q-Transformer, the paper's objective",
    "bc_demos": "BC, demonstrations only (RT-1 style)",
    "bc_all": "BC, all episodes",
    "bc_filtered": "filtered BC (successful episodes)",
    "cql": "CQL (d3rlpy)",
    "iql": "IQL (d3rlpy)",
    "dt": "Decision Transformer (d3rlpy)",
    "qt_no_conservative": "ablation: no conservative term (alpha 0)",
    "qt_no_mc_bound": "ablation: no Monte-Carlo bound",
    "qt_prior_targets": "Q-Transformer, the prior's choice in the TD targets too",
    "qt_lse_regularizer": "ablation: CQL-style log-sum-exp regulariser",
}
# The paper's simulated results (Fig. 3 / Table 1 of arXiv 2309.10150, ../shared/PAPER.md), for the side-by-side.
PAPER = {
    "qtransformer": 0.57, "cql": 0.43, "iql": 0.24, "bc_demos": 0.14, "dt": 0.04,
    "qt_lse_regularizer": 0.07, "qt_no_mc_bound": 0.02, "qt_no_conservative": 0.01,
}


@dataclass
class Args:
    """Train and evaluate every method on a MetaWorld demonstrations-plus-failures dataset."""

    quick: bool = False
    """Under 20 minutes on 2 cores: 1 seed, 1500 steps, 5 evaluation episodes per task, 3 evaluations per run."""
    out: Path = Path("bench/results/compare")
    """Results folder: datasets/, runs/, summary.json, table.md, success.png, curves.png."""
    tasks: str = TASKS
    """MetaWorld tasks (comma-separated) or mt10."""
    demos: int = 8
    """Demonstrations per task; the main dataset adds round(demos * 92 / 8) noisy replays per task (the paper's mix)."""
    recipe: Literal["replay", "perturbed"] = "replay"
    """How autonomous episodes are made: 'replay', the paper's (a demonstration replayed open-loop with
    noise, from its own start); 'perturbed', a perturbed expert from new starts (`make-dataset metaworld`'s default)."""
    autonomous: Optional[int] = None
    """Autonomous episodes per task in the main dataset; default round(demos * 92 / 8), the paper's mix."""
    scale: tuple[float, ...] = (0.1, 0.3, 1.0)
    """The data-scaling table: autonomous episodes as fractions of the main dataset's (1.0 is the main dataset itself)."""
    seeds: int = 3
    """Training seeds per method."""
    steps: int = 3000
    """Gradient steps per run, every method."""
    eval_episodes: int = 10
    """Evaluation episodes per task (the same reset seeds for every method)."""
    curve_points: int = 3
    """Evaluations per run, evenly spaced, for the learning curves (the last is at the end)."""
    methods: tuple[str, ...] = tuple(m for m in METHODS if m not in OPTIONS)
    """Methods to run."""
    scale_methods: tuple[str, ...] = ("qtransformer",)
    """Methods run on the data-scaling datasets."""
    jobs: int = 2
    """Runs side by side (one CPU thread each unless --threads)."""
    threads: Optional[int] = None
    """CPU threads per run (default: 1 when --jobs > 1, else 2). Set 1 when another benchmark shares the
    cores: two runs of 2 threads each on 2 cores slow each other several times over."""
    data_seed: int = 0
    """Seed of the datasets."""
    write_docs: bool = False
    """Replace the generated section of docs/benchmarks.md with the tables."""
    no_train: bool = False
    """Train nothing: report the runs already on disk (e.g. after stopping a long benchmark early)."""

    def __post_init__(self) -> None:
        threads_per_run(self.threads, self.jobs)  # a bad --threads stops here
        if self.quick:
            self.seeds, self.steps, self.eval_episodes, self.curve_points = 1, 1500, 5, 3
            if self.out == Path("bench/results/compare"):
                self.out = Path("bench/results/compare_quick")
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise SystemExit(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")


# -- datasets ----------------------------------------------------------------------------------------
def main_autonomous(args: Args) -> int:
    from qtransformer.envs.metaworld_tasks import paper_mix_autonomous

    return paper_mix_autonomous(args.demos) if args.autonomous is None else args.autonomous


def dataset_name(args: Args, autonomous: int) -> str:
    return f"{'paper_mix' if args.recipe == 'replay' else 'perturbed'}_demos{args.demos}_auto{autonomous}"


def make_dataset(args: Args, autonomous: int) -> Path:
    from qtransformer.data import EpisodeStore
    from qtransformer.envs.metaworld_tasks import make_metaworld_dataset, tasks_from_env_id

    path = args.out / "datasets" / dataset_name(args, autonomous)
    if (path / "meta.json").exists():
        return path
    t = time.perf_counter()
    ds = make_metaworld_dataset(tasks_from_env_id(f"metaworld:{args.tasks}"), args.demos, autonomous, recipe=args.recipe, seed=args.data_seed, workers=args.jobs)
    EpisodeStore.create(path, ds)
    print(f"made {path}: {ds.num_episodes} episodes, {ds.num_steps} steps in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def data_success(path: Path) -> dict:
    """The dataset's own success rates: per source, and per task and source."""
    from qtransformer.data import EpisodeStore

    store = EpisodeStore.open(path)
    sources, tasks, success = store.episode_table()
    out = {"steps": store.num_steps, "episodes": store.num_episodes, "by_source": {}, "by_task": {}}
    for src in sorted(set(sources)):
        out["by_source"][src] = float(success[sources == src].mean())
    for t, name in enumerate(store.task_names):
        mask = tasks == t
        out["by_task"][name] = {src: float(success[mask & (sources == src)].mean()) for src in sorted(set(sources[mask]))}
    return out


def prior_of(method: str) -> tuple[str, Optional[float]]:
    """(the --prior a method trains with, its --prior-weight or None without a prior): the `builtin`
    backbone's for ours that run Q-Transformer ('auto' since 2026-12-06, weight 0.03 since 2026-12-07:
    runs from before either are trained again), ('none', None) for BC and d3rlpy's."""
    from qtransformer.config import apply_overrides, preset

    if method not in OURS:
        return "none", None
    return prior_setting(apply_overrides(preset("builtin"), OURS[method]))


def prior_setting(cfg) -> tuple[str, Optional[float]]:
    """A TrainConfig's (trained --prior, its --prior-weight or None without a prior), as results record them."""
    prior = cfg.trained_prior()
    return prior, None if prior == "none" else cfg.prior_weight


def finished(spec: dict) -> Optional[dict]:
    """The result on disk of a run with these settings, or None (results from before "prior" had none,
    those from before "prior_weight" decoded a prior at 0.01)."""
    path = Path(spec["result"])
    old = json.loads(path.read_text()) if path.exists() else None
    same = old is not None and all(old.get(k, spec[k]) == spec[k] for k in ("steps", "eval_episodes", "curve_points"))
    if not same or old.get("prior", "none") != spec["prior"]:
        return None
    return old if recorded_prior_weight(old) == spec["prior_weight"] else None


def recorded_prior_weight(result: dict) -> Optional[float]:
    """The prior weight a run's result was decoded at: its "prior_weight", else (results from before the
    key) PRIOR_WEIGHT with a prior and None without one."""
    from qtransformer.config import PRIOR_WEIGHT

    return result.get("prior_weight", None if result.get("prior", "none") == "none" else PRIOR_WEIGHT)


# -- one run -------------------------------------------------------------------------------------------
def run_one(spec: dict) -> dict:
    """Train one method on one dataset with one seed, evaluate it, write and return the result JSON."""
    import torch

    from qtransformer.fileio import atomic_write_text

    torch.set_num_threads(spec["threads"])
    out = Path(spec["result"])
    out.parent.mkdir(parents=True, exist_ok=True)
    code = code_version()
    run = _run_ours(spec) if spec["method"] in OURS else _run_d3rlpy(spec)
    result = {k: spec[k] for k in ("method", "dataset", "seed", "steps", "eval_episodes", "curve_points", "prior", "prior_weight")} | run | {"code": code}
    atomic_write_text(out, json.dumps(result, indent=1))
    return result


def _run_ours(spec: dict) -> dict:
    import shutil

    from qtransformer.config import apply_overrides, preset

    run_dir = Path(spec["result"]).with_suffix("")
    shutil.rmtree(run_dir, ignore_errors=True)  # a run killed half-way starts again
    steps, every = spec["steps"], spec["steps"] // spec["curve_points"]
    cfg = apply_overrides(preset("builtin"), {
        "dataset": spec["dataset"], "out": str(run_dir), "seed": spec["seed"], "steps": steps, "device": "cpu",
        "eval_every": every, "eval_episodes": spec["eval_episodes"], "save_every": steps, "progress": False, "prefetch": 2,
    } | OURS[spec["method"]], f"method {spec['method']}")
    run, final = train_and_read(cfg)
    return run | {
        "per_task": {k: v["success_rate"] for k, v in final["per_task"].items()} if "per_task" in final  # several tasks
        else {final["env_id"].split(":", 1)[-1]: final["success_rate"]},
    }


def train_and_read(cfg) -> tuple[dict, dict]:
    """Train `cfg` (evaluating every cfg.eval_every steps) and read its run folder back: ({success_rate,
    curve [[step, success], ...], wall_s, train_s (the wall time less evaluations, from the median
    training speed), steps_per_s}, the final eval_info.json). Keeps the policy (for bench.diagnose), not
    the resume state."""
    import shutil

    from qtransformer.train import train

    run_dir, steps = Path(cfg.out), cfg.steps
    t = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [[r["step"], r["eval/success_rate"]] for r in rows if "eval/success_rate" in r]
    final = json.loads((run_dir / "eval_info.json").read_text())
    steps_per_s = float(np.median([r["train/steps_per_s"] for r in rows if "train/steps_per_s" in r]))
    for state in run_dir.glob("checkpoints/*/training_state"):
        shutil.rmtree(state)
    run = {"success_rate": final["success_rate"], "curve": curve, "wall_s": wall, "train_s": min(steps / steps_per_s, wall), "steps_per_s": steps_per_s}
    return run, final


def _run_d3rlpy(spec: dict, task_success=None) -> dict:
    """CQL, IQL or DT (d3rlpy, through bench.d3rlpy_peers) on spec's dataset. `task_success(act,
    task_name, episodes) -> float`, when given, replaces the evaluation on the fixed reset seeds
    (bench.regime evaluates on held-out variations)."""
    from bench import d3rlpy_peers as peers
    from qtransformer.data import EpisodeStore
    from qtransformer.envs import make_env
    from qtransformer.evaluate import eval_seeds, run_episodes, success_of

    d3rlpy = peers.import_d3rlpy()
    d3rlpy.seed(spec["seed"])
    ds = EpisodeStore.open(spec["dataset"]).to_dataset()
    dataset, with_task = peers.mdp_dataset(d3rlpy, ds)
    method = spec["method"]
    algo = peers.make_algo(d3rlpy, method, ds)

    def evaluate() -> tuple[float, dict]:
        per_task = {}
        for t, name in enumerate(ds.task_names):
            env_id, seeds = f"metaworld:{name}", eval_seeds(spec["eval_episodes"], 0)
            if method == "dt":
                wins = []
                for s in seeds:  # DT is stateful (a context of past steps): one episode at a time
                    wrapper, env = algo.as_stateful_wrapper(target_return=1.0), make_env(env_id)
                    obs, _ = env.reset(seed=s)
                    reward, done, ok = 0.0, False, False
                    while not done:
                        a = wrapper.predict(with_task(obs[None], np.array([t]))[0], reward)
                        obs, reward, terminated, truncated, info = env.step(a)
                        ok = ok or success_of(info, reward)
                        done = terminated or truncated
                    env.close()
                    wins.append(ok)
                per_task[name] = float(np.mean(wins))
            elif task_success is not None:
                per_task[name] = float(task_success(lambda obs, t=t: algo.predict(with_task(obs, np.full(len(obs), t))), name, spec["eval_episodes"]))
            else:
                eps = run_episodes(lambda obs, t=t: algo.predict(with_task(obs, np.full(len(obs), t))), env_id, seeds)
                per_task[name] = float(np.mean([e["success"] for e in eps]))
        return float(np.mean(list(per_task.values()))), per_task

    return peers.fit(d3rlpy, algo, dataset, peers.gradient_steps(method, spec["steps"]), spec["curve_points"], evaluate)


def threads_per_run(threads: Optional[int], jobs: int) -> int:
    """CPU threads for each run: --threads when given (>= 1), else 1 when runs go side by side and 2 alone."""
    if threads is not None and threads < 1:
        raise SystemExit(f"--threads must be >= 1 (or left out for the default), got {threads}")
    return threads or (1 if jobs > 1 else 2)


def say_runs(specs: list, done: int, todo: int, no_train: bool, jobs: int, label: str = "") -> None:
    """The line before the runs: how many are on disk, and how many will run (or, with --no-train, are left out)."""
    rest = f"{todo} not on disk (--no-train: left out)" if no_train else f"{todo} to do, {jobs} at a time"
    print(f"{label}{len(specs)} runs, {done} done before, {rest}", flush=True)


def run_in_pool(run_one, todo: list[dict], jobs: int, name) -> list[dict]:
    """run_one(spec) for every spec in `jobs` spawned processes, a progress bar over the runs and a line
    per finished run (`name(spec)`, its success and times); the results in the order they finish. A run
    that raises is reported on its own line (with its error) and the others go on; once all have ended,
    a SystemExit names the failed runs (finished runs have saved their results and are reused)."""
    from tqdm import tqdm

    results, failed = [], []
    if not todo:
        return results
    from qtransformer.workers import process_pool  # exits with this process (a killed run leaves no worker)

    with process_pool(jobs) as pool:
        futures = {pool.submit(run_one, s): s for s in todo}
        bar = tqdm(total=len(todo), desc="runs", dynamic_ncols=True)
        for f in as_completed(futures):
            s = futures[f]
            try:
                r = f.result()
            except Exception as exc:  # noqa: BLE001 - one failed run must not hide the others' results
                failed.append(name(s))
                bar.write(f"{name(s)}: FAILED ({type(exc).__name__}: {exc})")
                bar.update(1)
                continue
            results.append(r)
            training = f"{r['train_s']:.0f} s training, " if r.get("train_s") else ""
            bar.write(f"{name(s)}: success {r['success_rate']:.2f} ({training}{r['wall_s']:.0f} s in all)")
            bar.update(1)
        bar.close()
    if failed:
        raise SystemExit(f"{len(failed)} of {len(todo)} runs failed ({', '.join(failed)}); their errors are above. Fix and run again: finished runs are reused")
    return results


# -- summaries ---------------------------------------------------------------------------------------------
def mean_std(xs: list[float]) -> str:
    return f"{np.mean(xs):.2f} ± {np.std(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def summarize(args: Args, results: list[dict], data: dict, main: str, scale_names: dict[str, int]) -> dict:
    by = {}
    for r in results:
        by.setdefault((Path(r["dataset"]).name, r["method"]), []).append(r)
    tasks = list(data[main]["by_task"])
    table = {}
    for m in args.methods:
        rs = by.get((main, m), [])
        if not rs:
            continue
        table[m] = {
            "seeds": len(rs),
            "success": [r["success_rate"] for r in rs],
            "per_task": {t: [r["per_task"][t] for r in rs] for t in tasks},
            "wall_s": float(np.mean([r["wall_s"] for r in rs])),
            "train_s": float(np.mean([r["train_s"] for r in rs])),
            # x in batch-256 steps for all (DT's gradient steps take 5x the transitions)
            "curve_steps": [round(c[0] / rs[0]["curve"][-1][0] * args.steps) for c in rs[0]["curve"]],
            "curve": [float(np.mean([r["curve"][i][1] for r in rs])) for i in range(len(rs[0]["curve"]))],
        }
    scaling = {}
    for name, auto in scale_names.items():
        for m in args.scale_methods:
            rs = by.get((name, m), [])
            if rs:
                scaling.setdefault(m, {})[auto] = [r["success_rate"] for r in rs]
    return {"main_dataset": main, "data": data, "table": table, "scaling": scaling, "tasks": tasks}


def report_command(module: str, out: Path, no_train: bool) -> str:
    """The command lines to print beside a table, one per line: every distinct command that could train
    into `out`, in the order they last ran (recorded in out/command.txt), with this one last when it
    could train; with --no-train (a table of runs already on disk) only the recorded ones, so a table
    whose runs came from several commands names each of them, not the last alone."""
    here = (f"python -m {module} " + " ".join(sys.argv[1:]) if Path(sys.argv[0]).stem in (module.split(".")[-1], "__main__") else f"python -m {module}").strip()
    record = Path(out) / "command.txt"
    seen = [line for line in record.read_text().splitlines() if line.strip()] if record.exists() else []
    if not no_train:
        seen = [c for c in seen if c != here] + [here]
        record.write_text("\n".join(seen) + "\n")
    return "\n".join(seen) if seen else here


def command_markdown(command: str) -> str:
    """The table's command line(s), from report_command, as one markdown line."""
    lines = command.splitlines()
    if len(lines) == 1:
        return f"Command: `{lines[0]}`  "
    return "Commands, in the order they last ran: " + "; ".join(f"`{c}`" for c in lines) + "  "


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when a CUDA device is present, else 'cpu'; any other name as given."""
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def code_version(root: Optional[Path] = None) -> str:
    """The commit of this checkout that a run is trained at: 12 hex digits, '+dirty' when src/ or bench/ has
    uncommitted changes, 'unknown' outside a git checkout. Runs are reused when their settings match, not
    their code, so each result records it and every table says which code its runs came from."""
    import subprocess

    root = root or Path(__file__).resolve().parents[1]
    try:
        git = ["git", "-C", str(root)]
        commit = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "src", "bench"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def code_line(results: list[dict]) -> str:
    """'<commit> (n runs), ...' over the results, most runs first; runs from before the code was recorded
    count as 'unrecorded'."""
    from collections import Counter

    counts = Counter(r.get("code", "unrecorded") for r in results)
    return ", ".join(f"{c} ({n} run{'s' if n != 1 else ''})" for c, n in counts.most_common())


def versions() -> dict:
    import torch

    v = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count()}
    for pkg in ("qtransformer", "d3rlpy", "metaworld", "gymnasium"):
        try:
            from importlib.metadata import version

            v[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - a missing package is reported as such
            v[pkg] = "not installed"
    return v


def markdown(args: Args, summary: dict, command: str) -> str:
    data, table, tasks = summary["data"][summary["main_dataset"]], summary["table"], summary["tasks"]
    short = [t.replace("-v3", "") for t in tasks]
    recipe = "noisy replays of the demonstrations, the paper's recipe" if args.recipe == "replay" else "a perturbed expert from new starts"
    lines = [
        command_markdown(command),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()) + "  ",
        f"Dataset: {len(tasks)} MetaWorld tasks, {args.demos} demonstrations + {main_autonomous(args)} autonomous episodes per task "
        f"({recipe}), "
        f"{data['episodes']} episodes, {data['steps']} steps. Every method: {args.steps} gradient steps, "
        f"{args.seeds} seed(s), {args.eval_episodes} evaluation episodes per task on the same reset seeds.",
        "",
        "| method | success (mean ± std over seeds) | " + " | ".join(short) + " | train s | wall s | paper |",
        "|---|---|" + "---|" * len(tasks) + "---|---|---|",
    ]
    for src, rate in data["by_source"].items():
        cells = " | ".join(f"{data['by_task'][t].get(src, float('nan')):.2f}" for t in tasks)
        lines.append(f"| *data: {src} episodes* | {rate:.2f} | {cells} | | | |")
    for m, row in table.items():
        cells = " | ".join(f"{np.mean(row['per_task'][t]):.2f}" for t in tasks)
        paper = f"{PAPER[m]:.2f}" if m in PAPER else ""
        lines.append(f"| {LABELS[m]} | {mean_std(row['success'])} | {cells} | {row['train_s']:.0f} | {row['wall_s']:.0f} | {paper} |")
    if summary["scaling"]:
        autos = sorted({a for s in summary["scaling"].values() for a in s})
        lines += ["", "Data scaling (success against autonomous episodes per task; demonstrations fixed at "
                  f"{args.demos} per task):", "", "| method | " + " | ".join(str(a) for a in autos) + " |", "|---|" + "---|" * len(autos)]
        for m, s in summary["scaling"].items():
            lines.append(f"| {LABELS[m]} | " + " | ".join(mean_std(s[a]) if a in s else "" for a in autos) + " |")
    return "\n".join(lines) + "\n"


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend, or None (with a notice) without the bench extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (the bench extra): no plots", file=sys.stderr)
        return None
    return plt


def plots(summary: dict, out: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    table = summary["table"]
    names = list(table)
    success_bars(
        plt, names, [np.mean(table[m]["success"]) for m in names], [np.std(table[m]["success"]) for m in names], LABELS, "success rate",
        f"MetaWorld, {summary['main_dataset']}: success at the end of training (mean ± std over seeds)", out / "success.png",
    )
    curve_lines(
        plt, {m: (table[m]["curve_steps"], table[m]["curve"]) for m in names}, LABELS,
        "training budget: gradient steps at batch 256 (DT: the same number of transitions)", "success rate (mean over seeds and tasks)",
        out / "curves.png",
    )


def success_bars(plt, names: list[str], means: list[float], stds: list[float], labels: dict, ylabel: str, title: str, path: Path) -> None:
    """A bar per method (Q-Transformer and its paper variant blue, ablations grey, baselines orange) with std error bars."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    colors = ["tab:blue" if m.startswith("qtransformer") else "tab:gray" if m.startswith("qt_") else "tab:orange" for m in names]
    ax.bar(range(len(names)), means, yerr=stds, color=colors, capsize=3)
    ax.set_xticks(range(len(names)), [labels[m].replace(" (", "\n(").replace(": ", ":\n") for m in names], fontsize=7, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curve_lines(plt, curves: dict[str, tuple[list, list]], labels: dict, xlabel: str, ylabel: str, path: Path) -> None:
    """Success against training steps, a line per method: curves {method: (steps, success)}."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for m, (steps, success) in curves.items():
        ax.plot(steps, success, marker="o", label=labels[m], lw=2.5 if m == "qtransformer" else 1.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


DOCS_BEGIN, DOCS_END = "<!-- bench.compare: begin -->", "<!-- bench.compare: end -->"


def write_docs(
    text: str, images: Path, docs: Path = Path("docs/benchmarks.md"), begin: str = DOCS_BEGIN, end: str = DOCS_END,
    prefix: str = "compare", pictures: tuple[tuple[str, str], ...] = (("success", "success.png"), ("learning curves", "curves.png")),
) -> None:
    """Replace the block between `begin` and `end` in `docs` (or add it at the end) with `text` and the
    pictures (alt text, file under `images`), copied to docs/images/<prefix>_<file>."""
    import shutil

    (docs.parent / "images").mkdir(exist_ok=True)
    shown = []
    for alt, name in pictures:
        if (images / name).exists():
            shutil.copyfile(images / name, docs.parent / "images" / f"{prefix}_{name}")
            shown.append(f"![{alt}](images/{prefix}_{name})")
    block = f"{begin}\n{text}\n" + "\n\n".join(shown) + f"\n{end}"
    old = docs.read_text()
    if begin in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    docs.write_text(new)


# -- main ------------------------------------------------------------------------------------------------
def main(args: Args) -> None:
    try:
        import metaworld  # noqa: F401
    except ImportError:
        raise SystemExit("bench.compare needs MetaWorld: pip install -e '.[sim,bench]' (or bash scripts/setup.sh --bench)") from None
    if set(args.methods) & set(D3RLPY):
        import contextlib
        import io

        try:
            with contextlib.redirect_stderr(io.StringIO()):  # d3rlpy imports the old gym, which prints a notice
                import d3rlpy  # noqa: F401
        except ImportError:
            raise SystemExit("CQL, IQL and DT come from d3rlpy: bash scripts/setup.sh --bench, or drop them with --methods") from None
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    main_auto = main_autonomous(args)
    main_path = make_dataset(args, main_auto)
    scale_autos = sorted({max(1, int(round(f * main_auto))) for f in args.scale})
    scale_paths = {a: (main_path if a == main_auto else make_dataset(args, a)) for a in scale_autos}
    data = {p.name: data_success(p) for p in {main_path, *scale_paths.values()}}

    # The main table first, then the scaling runs; each seed-major, so a stopped benchmark has every
    # method at its first seeds.
    jobs = [(seed, main_path, m) for seed in range(args.seeds) for m in args.methods]
    jobs += [(seed, p, m) for seed in range(args.seeds) for p in scale_paths.values() if p != main_path for m in args.scale_methods]
    specs = [
        {
            "method": m, "dataset": str(path), "seed": seed, "steps": args.steps, "eval_episodes": args.eval_episodes,
            "curve_points": args.curve_points, "prior": prior_of(m)[0], "prior_weight": prior_of(m)[1], "threads": threads_per_run(args.threads, args.jobs),
            "result": str(args.out / "runs" / path.name / m / f"seed{seed}.json"),
        }
        for seed, path, m in jobs
    ]
    results, todo = [], []
    for s in specs:
        old = finished(s)
        if old is not None:
            results.append(old)
        else:  # not run yet, or run with other settings
            todo.append(s)
    say_runs(specs, len(results), len(todo), args.no_train, args.jobs)
    if args.no_train:
        todo = []
    results += run_in_pool(run_one, todo, args.jobs, lambda s: f"{s['method']:>20} {Path(s['dataset']).name} seed {s['seed']}")

    summary = summarize(args, results, data, main_path.name, {p.name: a for a, p in scale_paths.items()})
    summary["versions"], summary["args"] = versions() | {"code": code_line(results)}, {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(args).items()}
    summary["wall_s"] = time.perf_counter() - t0
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    text = markdown(args, summary, report_command("bench.compare", args.out, args.no_train))
    (args.out / "table.md").write_text(text)
    plots(summary, args.out)
    print(text)
    print(f"wrote {args.out}/summary.json, table.md, success.png, curves.png ({summary['wall_s'] / 60:.1f} min)")
    if args.write_docs:
        write_docs(text, args.out)
        print("updated docs/benchmarks.md")


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
