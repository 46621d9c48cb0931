"""OGBench single-task manipulation: Q-Transformer against BC, IQL and ReBRAC on the same generated
data, the published table beside ours (issue 12; docs/ogbench.md has the data recipe).

    python -m bench.ogbench                         # the reduced protocol (this machine; resumable)
    python -m bench.ogbench --protocol full         # the published protocol, for a GPU machine
    python -m bench.ogbench --envs cube-single --tasks 1 --seeds 1   # a slice of it
    python -m bench.ogbench --no-train --write-docs  # the table of the runs on disk, into docs/benchmarks.md

Needs the `ogbench` and `bench` extras (`bash scripts/setup.sh --bench`). Datasets are made by the same
code as `qtransformer make-dataset ogbench` (the "play" data, 1000 raw episodes x 1000 transitions,
relabelled per task with the sparse success reward; the raw episodes are cached and shared by an
environment's tasks). Every run writes its own result JSON under --out/runs and a finished run is
skipped when the command is repeated, so the benchmark runs across several sittings. At the end it
writes summary.json ({"<env>": {"<method>": {mean, std, per_task, per_seed}}, "protocol": {...}}),
table.md and success.png into --out.

The protocol (fixed before any Q-Transformer run, and the same for every method):
- every method trains on the same dataset for the same number of gradient steps at batch 256, and is
  evaluated on the same reset seeds of OGBench's single-task evaluation environment (episodes end at
  success), `curve_points` times during training; the last evaluation is the result;
- our methods use their presets unchanged: `default` (qtransformer), `paper` (qtransformer_paper), and
  the `default` network trained by behaviour cloning on all data (bc, as OGBench's BC);
- IQL and ReBRAC are d3rlpy's, at the settings the FQL paper's code uses for the cube tasks (PEERS
  below: discount 0.99, 4 x 512 MLPs with layer norm, learning rate 3e-4; IQL expectile 0.9 and AWR
  inverse temperature 1; ReBRAC actor BC weight 1 and critic BC weight 0), not tuned here;
- development and any tuning only on cube-single and cube-double (tasks 1-2); scene and puzzle-3x3 are
  reported with those settings, untouched.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from bench import compare

TUNING_ENVS = ("cube-single", "cube-double")
HELDOUT_ENVS = ("scene", "puzzle-3x3")

# Ours: method -> (preset, overrides of its TrainConfig).
OURS = {
    "qtransformer": ("default", {}),
    "qtransformer_paper": ("paper", {}),
    "bc": ("default", {"algo": {"method": "bc"}}),
    # The long-horizon study (issue 12, part 4), not in the default --methods: n-step returns and the
    # Monte-Carlo bound.
    "qt_nstep5": ("default", {"algo": {"n_step": 5}}),
    "qt_no_mc_bound": ("default", {"algo": {"mc_bound": False}}),
    # The conservative weight study (issue 12): the default's per-bin weight 1/15 shrinks the data bins'
    # values where the actions spread over many of the 256 bins (python -m bench.bin_spread): the
    # paper's per-bin weight 1/(K-1) with the default's head start and acting network, and 16 bins.
    "qt_paper_weight": ("default", {"algo": {"conservative_bins": 0}}),
    "qt_k16": ("default", {"algo": {"num_bins": 16}}),
    # Both together: 5-step returns alone keep the default's shrunken values (the conservative weight
    # sets them, whatever the targets), the paper's weight alone lifts them but did not learn by 12k steps.
    "qt_nstep5_paper_weight": ("default", {"algo": {"n_step": 5, "conservative_bins": 0}}),
    # Support-constrained decoding (issue 11, part 2): an imitation head on all data and the greedy
    # argmax restricted to bins with imitation probability >= 0.1 x the best bin's. IQL's policy is a
    # weighted imitation of the data; this keeps Q-Transformer's choices on the play data's support too.
    "qt_support": ("default", {"algo": {"imitation_weight": 1.0, "support_tau": 0.1}}),
    # Action chunks (issue 12, part 4; Q-chunking, Li et al. 2025, h = 5 on OGBench): one decision
    # chooses the bins of 5 steps, backed up over 5 steps. On 12k-step runs the greedy bin sat 0.03 above
    # the data bin where one step's progress is worth at most (1/gamma - 1) V = 0.005: a chunk raises
    # what a decision can gain to about 5 steps' worth. With the paper's per-bin weight, as the best pair above.
    # Measured at 12k steps: 0/5/0/0 %, 3.8x slower to train, the same 0.03 gap in each of its 25
    # dimensions (docs/benchmarks.md): kept as an option, in no preset.
    "qt_chunk5_paper_weight": ("default", {"algo": {"action_chunk": 5, "conservative_bins": 0}}),
    # Decoding closer to imitation: the best pair above plus an imitation head on all data, the argmax
    # restricted to bins with p >= tau x the best bin's. tau = 0.1 (qt_support) left ~40 bins per
    # dimension; BC's own greedy choice is tau = 1.
    "qt_support_tau05": ("default", {"algo": {"n_step": 5, "conservative_bins": 0, "imitation_weight": 1.0, "support_tau": 0.5}}),
    "qt_support_tau09": ("default", {"algo": {"n_step": 5, "conservative_bins": 0, "imitation_weight": 1.0, "support_tau": 0.9}}),
}
STUDY = ("qt_nstep5", "qt_no_mc_bound", "qt_paper_weight", "qt_k16", "qt_nstep5_paper_weight", "qt_support", "qt_chunk5_paper_weight", "qt_support_tau05", "qt_support_tau09")
# d3rlpy's: method -> settings (bench.d3rlpy_peers.make_algo). From the FQL paper's code (agents/iql.py,
# agents/rebrac.py and its README's commands for the cube tasks), in d3rlpy's terms.
_MLP = {"hidden": [512, 512, 512, 512], "layer_norm": True, "gamma": 0.99, "actor_learning_rate": 3e-4, "critic_learning_rate": 3e-4}
PEERS = {
    "iql": _MLP | {"expectile": 0.9, "weight_temp": 1.0},
    "rebrac": _MLP | {"actor_beta": 1.0, "critic_beta": 0.0},
}
METHODS = tuple(m for m in OURS if m not in STUDY) + tuple(PEERS)
ALL_METHODS = tuple(OURS) + tuple(PEERS)
LABELS = {
    "qtransformer": "Q-Transformer",
    "qtransformer_paper": "Q-Transformer, the paper's objective",
    "bc": "BC (ours, all data)",
    "iql": "IQL (d3rlpy)",
    "rebrac": "ReBRAC (d3rlpy)",
    "qt_nstep5": "Q-Transformer, 5-step returns",
    "qt_no_mc_bound": "Q-Transformer, no Monte-Carlo bound",
    "qt_paper_weight": "Q-Transformer, the paper's per-bin conservative weight 1/(K-1)",
    "qt_k16": "Q-Transformer, 16 bins",
    "qt_nstep5_paper_weight": "Q-Transformer, 5-step returns and the paper's per-bin weight",
    "qt_support": "Q-Transformer, imitation head on all data, support tau 0.1",
    "qt_chunk5_paper_weight": "Q-Transformer, action chunks of 5 steps and the paper's per-bin weight",
    "qt_support_tau05": "Q-Transformer, 5-step returns, the paper's per-bin weight, support tau 0.5",
    "qt_support_tau09": "Q-Transformer, 5-step returns, the paper's per-bin weight, support tau 0.9",
}
# The published single-task averages over tasks 1-5, success % (FQL paper, Park et al. 2025, Table 1:
# 8 seeds, 1M gradient steps at batch 256, OGBench's own datasets and reward).
PUBLISHED = {
    "cube-single": {"bc": 5, "iql": 83, "rebrac": 91, "fql": 96},
    "cube-double": {"bc": 2, "iql": 7, "rebrac": 12, "fql": 29},
    "scene": {"bc": 5, "iql": 28, "rebrac": 41, "fql": 56},
    "puzzle-3x3": {"bc": 2, "iql": 9, "rebrac": 21, "fql": 30},
    "puzzle-4x4": {"iql": 7, "rebrac": 14, "fql": 17},
}
PROTOCOLS = {
    # Fits this 2-core machine: about 3 hours of runs for cube-single and cube-double, tasks 1-2, 3
    # seeds, plus 1-2 hours of data generation; scene and puzzle-3x3 as much again.
    "reduced": {"envs": TUNING_ENVS + HELDOUT_ENVS, "tasks": (1, 2), "seeds": 3, "steps": 5000, "eval_episodes": 20, "curve_points": 4},
    # The published protocol, for a GPU machine: 5 environments x 5 tasks x 8 seeds x 1M steps.
    "full": {"envs": TUNING_ENVS + HELDOUT_ENVS + ("puzzle-4x4",), "tasks": (1, 2, 3, 4, 5), "seeds": 8, "steps": 1_000_000,
             "eval_episodes": 50, "curve_points": 10},
}
MATCH = ("steps", "eval_episodes", "curve_points", "preset", "overrides", "settings")  # a result on disk is reused when these match


@dataclass
class Args:
    """Train and evaluate Q-Transformer, BC, IQL and ReBRAC on OGBench's single-task manipulation data."""

    protocol: Literal["reduced", "full"] = "reduced"
    """'reduced' fits this machine; 'full' is the published protocol (a GPU machine). Sets the fields below left unset."""
    envs: Optional[tuple[str, ...]] = None
    """Environments (default: the protocol's)."""
    tasks: Optional[tuple[int, ...]] = None
    """Single tasks 1..5 per environment (default: the protocol's)."""
    seeds: Optional[int] = None
    """Training seeds per method and task."""
    steps: Optional[int] = None
    """Gradient steps at batch 256 per run, every method."""
    eval_episodes: Optional[int] = None
    """Evaluation episodes per task and evaluation (the same reset seeds for every method)."""
    curve_points: Optional[int] = None
    """Evaluations per run, evenly spaced (the last at the end): the learning curves."""
    methods: tuple[str, ...] = METHODS
    """Methods to run; also the studies qt_nstep5, qt_no_mc_bound (long horizons), qt_paper_weight, qt_k16 (the conservative weight), qt_nstep5_paper_weight (both), qt_support (decoding on the data's support), qt_chunk5_paper_weight (action chunks), qt_support_tau05 and qt_support_tau09 (decoding closer to imitation)."""
    episodes: int = 1000
    """Raw episodes per dataset (1000 x 1000 transitions = 1M, as published)."""
    episode_length: int = 1001
    """States per raw episode (OGBench's 1001); shorter only for tests."""
    data_seed: int = 0
    """Seed of the datasets."""
    workers: int = 2
    """Processes generating the datasets."""
    jobs: int = 2
    """Runs side by side (one CPU thread each unless --threads)."""
    threads: Optional[int] = None
    """CPU threads per run (default: 1 when --jobs > 1, else 2). Set 1 when another benchmark shares the
    cores: two runs of 2 threads each on 2 cores slow each other several times over."""
    device: str = "cpu"
    """Training device for every method: cpu, cuda or auto."""
    out: Path = Path("bench/results/ogbench")
    """Results folder: datasets/, runs/, summary.json, table.md, success.png."""
    write_docs: bool = False
    """Replace the bench.ogbench section of docs/benchmarks.md with the table."""
    no_train: bool = False
    """Train nothing: report the runs already on disk."""

    def __post_init__(self) -> None:
        for name, value in PROTOCOLS[self.protocol].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        from qtransformer.envs.ogbench import ENVS, NUM_TASKS

        bad = sorted(set(self.envs) - set(ENVS))
        if bad:
            raise SystemExit(f"--envs: unknown {', '.join(bad)}; choose from {', '.join(ENVS)}")
        if any(not 1 <= t <= NUM_TASKS for t in self.tasks):
            raise SystemExit(f"--tasks: each must be 1..{NUM_TASKS}, got {self.tasks}")
        unknown = sorted(set(self.methods) - set(ALL_METHODS))
        if unknown:
            raise SystemExit(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(ALL_METHODS)}")
        if min(self.seeds, self.steps, self.eval_episodes, self.curve_points) < 1:
            raise SystemExit("--seeds, --steps, --eval-episodes and --curve-points must be >= 1")
        compare.threads_per_run(self.threads, self.jobs)  # a bad --threads stops here


# -- datasets ------------------------------------------------------------------------------------------
def dataset_path(args: Args, env: str, task: int) -> Path:
    return args.out / "datasets" / f"{env}-play-task{task}"


def make_dataset(args: Args, env: str, task: int) -> dict:
    """The play dataset of `env` relabelled for `task` (made once; the raw episodes are cached per environment)."""
    from qtransformer.envs.ogbench_dataset import make_ogbench_dataset

    path = dataset_path(args, env, task)
    recipe = path / "ogbench" / "recipe.json"
    if (path / "meta.json").exists() and recipe.exists():
        summary = json.loads(recipe.read_text())
        if summary["raw_episodes"] == args.episodes and summary["episode_length"] == args.episode_length and summary["seed"] == args.data_seed:
            return summary
    summary = make_ogbench_dataset(env, "play", task, args.episodes, path, seed=args.data_seed, workers=args.workers,
                                   episode_length=args.episode_length, progress=True)
    print(f"made {path}: {summary['transitions']} transitions, data success rate {summary['success_rate']:.2f}", flush=True)
    return summary


# -- one run -------------------------------------------------------------------------------------------
def run_one(spec: dict) -> dict:
    """Train one method on one task's dataset with one seed, evaluate it, write and return the result JSON."""
    import torch

    from qtransformer.fileio import atomic_write_text

    torch.set_num_threads(spec["threads"])
    out = Path(spec["result"])
    out.parent.mkdir(parents=True, exist_ok=True)
    code = compare.code_version()
    run = _run_ours(spec) if spec["method"] in OURS else _run_peer(spec)
    result = {k: spec[k] for k in ("method", "env", "task", "dataset", "seed", "env_id", *MATCH)} | run | {"code": code}
    atomic_write_text(out, json.dumps(result, indent=1))
    return result


def _run_ours(spec: dict) -> dict:
    from qtransformer.config import apply_overrides, preset

    run_dir = Path(spec["result"]).with_suffix("")
    shutil.rmtree(run_dir, ignore_errors=True)  # a run killed half-way starts again
    steps = spec["steps"]
    cfg = apply_overrides(preset(spec["preset"]), {
        "dataset": spec["dataset"], "out": str(run_dir), "seed": spec["seed"], "steps": steps, "device": spec["device"],
        "eval_every": max(1, steps // spec["curve_points"]), "eval_episodes": spec["eval_episodes"], "save_every": steps,
        "progress": False, "prefetch": 2,
    } | spec["overrides"], f"method {spec['method']}")
    return compare.train_and_read(cfg)[0]


def _run_peer(spec: dict) -> dict:
    from bench import d3rlpy_peers as peers
    from qtransformer.data import EpisodeStore
    from qtransformer.evaluate import eval_seeds, run_episodes

    d3rlpy = peers.import_d3rlpy()
    d3rlpy.seed(spec["seed"])
    ds = EpisodeStore.open(spec["dataset"]).to_dataset()
    dataset, with_task = peers.mdp_dataset(d3rlpy, ds)
    device = compare.resolve_device(spec["device"])
    algo = peers.make_algo(d3rlpy, spec["method"], ds, settings=spec["settings"], device="cuda:0" if device == "cuda" else "cpu:0")

    def evaluate() -> tuple[float, dict]:
        eps = run_episodes(lambda obs: algo.predict(with_task(obs, np.zeros(len(obs), np.int64))), spec["env_id"], eval_seeds(spec["eval_episodes"], 0))
        rate = float(np.mean([e["success"] for e in eps]))
        return rate, {spec["env_id"]: rate}

    run = peers.fit(d3rlpy, algo, dataset, spec["steps"], spec["curve_points"], evaluate)
    run.pop("per_task")
    return run


def specs_for(args: Args, summaries: dict) -> list[dict]:
    """Seed-major, then environment and task, so a stopped benchmark has every method at its first seeds."""
    specs = []
    for seed in range(args.seeds):
        for env in args.envs:
            for task in args.tasks:
                for m in args.methods:
                    preset_name, overrides = OURS.get(m, ("d3rlpy", {}))
                    specs.append({
                        "method": m, "env": env, "task": task, "seed": seed, "dataset": str(dataset_path(args, env, task)),
                        "env_id": summaries[(env, task)]["env_id"], "steps": args.steps, "eval_episodes": args.eval_episodes,
                        "curve_points": args.curve_points, "preset": preset_name, "overrides": overrides, "settings": PEERS.get(m, {}),
                        "device": args.device, "threads": compare.threads_per_run(args.threads, args.jobs),
                        "result": str(args.out / "runs" / f"{env}-task{task}" / m / f"seed{seed}.json"),
                    })
    return specs


def execute(args: Args, specs: list[dict]) -> list[dict]:
    """Run the specs not on disk with matching settings; return every result."""
    results, todo = [], []
    for s in specs:
        r = Path(s["result"])
        old = json.loads(r.read_text()) if r.exists() else None
        if old is not None and all(old.get(k) == s[k] for k in MATCH):
            results.append(old)
        else:
            todo.append(s)
    compare.say_runs(specs, len(results), len(todo), args.no_train, args.jobs)
    if args.no_train:
        todo = []
    return results + compare.run_in_pool(run_one, todo, args.jobs, lambda s: f"{s['method']:>18} {s['env']} task {s['task']} seed {s['seed']}")


# -- summaries ---------------------------------------------------------------------------------------------
def summarize(args: Args, results: list[dict]) -> dict:
    """{"<env>": {"<method>": {"mean", "std", "per_task": {"task<N>": mean over seeds}, "per_seed": [task
    mean per seed], "seeds", "curve_steps", "curve"}}}: mean and std over seeds of the mean over tasks,
    counting only seeds for which every task of the environment ran."""
    summary: dict = {}
    for env in args.envs:
        for m in args.methods:
            runs = {(r["task"], r["seed"]): r for r in results if r["env"] == env and r["method"] == m}
            seeds = [s for s in range(args.seeds) if all((t, s) in runs for t in args.tasks)]
            if not seeds:
                continue
            per_seed = [float(np.mean([runs[(t, s)]["success_rate"] for t in args.tasks])) for s in seeds]
            first = runs[(args.tasks[0], seeds[0])]["curve"]
            summary.setdefault(env, {})[m] = {
                "mean": float(np.mean(per_seed)), "std": float(np.std(per_seed)), "per_seed": per_seed, "seeds": len(seeds),
                "per_task": {f"task{t}": float(np.mean([runs[(t, s)]["success_rate"] for s in seeds])) for t in args.tasks},
                "curve_steps": [c[0] for c in first],
                "curve": [float(np.mean([runs[(t, s)]["curve"][i][1] for t in args.tasks for s in seeds])) for i in range(len(first))],
                "train_s": float(np.mean([runs[(t, s)]["train_s"] for t in args.tasks for s in seeds])),
            }
    return summary


def protocol_of(args: Args) -> dict:
    return {
        "protocol": args.protocol, "envs": list(args.envs), "tasks": list(args.tasks), "seeds": args.seeds, "steps": args.steps,
        "batch_size": 256, "eval_episodes": args.eval_episodes, "curve_points": args.curve_points, "dataset": "play",
        "raw_episodes": args.episodes, "episode_length": args.episode_length, "data_seed": args.data_seed,
        "reward": "sparse success (1 and terminal when every subtask is solved)", "tuning_envs": list(TUNING_ENVS),
        "heldout_envs": list(HELDOUT_ENVS), "ours": {m: {"preset": p, "overrides": o} for m, (p, o) in OURS.items()}, "peers": PEERS,
    }


def markdown(args: Args, summary: dict, data: dict, command: str, versions: dict) -> str:
    methods = [m for m in args.methods if any(m in summary.get(env, {}) for env in args.envs)]
    lines = [
        compare.command_markdown(command),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "  ",
        f"Protocol '{args.protocol}': the play datasets ({args.episodes} raw episodes x {args.episode_length - 1} transitions, data seed "
        f"{args.data_seed}, sparse success reward), tasks {', '.join(map(str, args.tasks))}, {args.steps} gradient steps at batch 256 "
        f"for every method, {args.eval_episodes} evaluation episodes per task on the same reset seeds, up to {args.seeds} seeds. "
        "Success %, the mean over tasks (± std over seeds); `n` = seeds that finished every task. Published: the FQL paper's "
        "table (tasks 1-5, 8 seeds, 1M steps, OGBench's datasets and its subtask reward), not the same data or budget.",
        "",
        "| environment | data success | " + " | ".join(LABELS[m] for m in methods) + " | published BC | IQL | ReBRAC | FQL |",
        "|---|---|" + "---|" * len(methods) + "---|---|---|---|",
    ]
    for env in args.envs:
        rows = summary.get(env, {})
        rates = [data[(env, t)]["success_rate"] for t in args.tasks if (env, t) in data]
        cells = [f"{100 * rows[m]['mean']:.0f} ± {100 * rows[m]['std']:.0f} (n={rows[m]['seeds']})" if m in rows else "" for m in methods]
        pub = PUBLISHED.get(env, {})
        published = [str(pub[k]) if k in pub else "–" for k in ("bc", "iql", "rebrac", "fql")]
        held = " (held out)" if env in HELDOUT_ENVS else ""
        lines.append(f"| {env}{held} | {100 * np.mean(rates):.0f} | " + " | ".join(cells) + " | " + " | ".join(published) + " |")
    per_task = [(env, t) for env in args.envs for t in args.tasks if any(f"task{t}" in r["per_task"] for r in summary.get(env, {}).values())]
    if per_task:
        lines += ["", "Per task (success %, mean over seeds; data: raw episodes that reach the goal, and success transitions):", "",
                  "| task | data | " + " | ".join(LABELS[m] for m in methods) + " |", "|---|---|" + "---|" * len(methods)]
        for env, t in per_task:
            d = data.get((env, t), {})
            cells = [f"{100 * summary[env][m]['per_task'][f'task{t}']:.0f}" if m in summary.get(env, {}) else "" for m in methods]
            lines.append(f"| {env} task {t} | {100 * d.get('success_rate', float('nan')):.0f} % ({d.get('success_transitions', '?')}) | "
                         + " | ".join(cells) + " |")
    curves = [(env, m) for env in args.envs for m in methods if m in summary.get(env, {})]
    if curves:
        steps = summary[curves[0][0]][curves[0][1]]["curve_steps"]
        lines += ["", "Learning curves (success %, mean over tasks and seeds, at gradient steps " + ", ".join(map(str, steps)) + "):", ""]
        for env, m in curves:
            lines.append(f"- {env}, {LABELS[m]}: " + ", ".join(f"{100 * v:.0f}" for v in summary[env][m]["curve"]))
    return "\n".join(lines) + "\n"


def plot(summary: dict, args: Args, path: Path) -> None:
    plt = compare.pyplot()
    if plt is None:
        return
    envs = [e for e in args.envs if e in summary]
    methods = [m for m in args.methods if any(m in summary[e] for e in envs)]
    if not envs:
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        means = [summary[e].get(m, {}).get("mean", np.nan) for e in envs]
        stds = [summary[e].get(m, {}).get("std", 0.0) for e in envs]
        ax.bar(np.arange(len(envs)) + i * width, means, width, yerr=stds, capsize=2, label=LABELS[m])
    ax.set_xticks(np.arange(len(envs)) + 0.4 - width / 2, envs)
    ax.set_ylabel("success rate (mean over tasks, ± std over seeds)")
    ax.set_ylim(0, 1)
    ax.set_title(f"OGBench single-task, {args.protocol} protocol: {args.steps} gradient steps, tasks {', '.join(map(str, args.tasks))}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


DOCS_BEGIN, DOCS_END = "<!-- bench.ogbench: begin -->", "<!-- bench.ogbench: end -->"


def main(args: Args) -> None:
    try:
        import ogbench  # noqa: F401
    except ImportError:
        raise SystemExit("bench.ogbench needs OGBench: pip install -e '.[ogbench,bench]' (or bash scripts/setup.sh --bench)") from None
    if set(args.methods) & set(PEERS):
        try:
            from bench.d3rlpy_peers import import_d3rlpy

            import_d3rlpy()
        except ImportError:
            raise SystemExit("IQL and ReBRAC come from d3rlpy: bash scripts/setup.sh --bench, or drop them with --methods") from None
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = {}
    for env in args.envs:
        for task in args.tasks:
            if args.no_train and not (dataset_path(args, env, task) / "ogbench" / "recipe.json").exists():
                continue
            data[(env, task)] = make_dataset(args, env, task)
    if not args.no_train:
        results = execute(args, specs_for(args, data))
    else:
        results = [json.loads(p.read_text()) for p in sorted((args.out / "runs").glob("*/*/seed*.json"))]
        results = [r for r in results if all(r.get(k) == getattr(args, k) for k in ("steps", "eval_episodes", "curve_points"))]
    summary = summarize(args, results)
    used = [r for r in results if r["env"] in args.envs and r["task"] in args.tasks and r["method"] in args.methods and r["seed"] < args.seeds]
    versions = compare.versions() | {"ogbench": _version("ogbench"), "code": compare.code_line(used)}
    out = summary | {"protocol": protocol_of(args), "versions": versions, "wall_s": time.perf_counter() - t0,
                     "data": {f"{e}-task{t}": d for (e, t), d in data.items()}}
    (args.out / "summary.json").write_text(json.dumps(out, indent=1))
    text = markdown(args, summary, data, compare.report_command("bench.ogbench", args.out, args.no_train), versions)
    (args.out / "table.md").write_text(text)
    plot(summary, args, args.out / "success.png")
    print(text)
    print(f"wrote {args.out}/summary.json, table.md, success.png ({(time.perf_counter() - t0) / 60:.1f} min)")
    if args.write_docs:
        compare.write_docs(text, args.out, begin=DOCS_BEGIN, end=DOCS_END, prefix="ogbench", pictures=(("OGBench success", "success.png"),))
        print("updated docs/benchmarks.md")


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
