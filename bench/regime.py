"""The paper's regime on MetaWorld: few demonstrations, autonomous episodes from closed-loop learned
policies, evaluation on held-out task variations (issue 11, "What to build" item 3).

    python -m bench.regime --calibrate       # stage 1 only: BC on demonstrations, fixes the demo count
    python -m bench.regime --quick           # every stage at small sizes (about 40-60 min on 2 cores)
    python -m bench.regime                   # the full protocol: about 85 core-hours on CPU (docs/benchmarks.md)
    python -m bench.regime --write-docs      # also put the tables into docs/benchmarks.md
    python -m bench.regime --no-train --final-episodes 50   # the final policies on disk, on 50 held-out episodes per task

Needs the `sim` and `bench` extras (`bash scripts/setup.sh --bench`). Resumable like bench.compare:
every run writes its own JSON under --out and is reused when its settings match; a run of ours killed
half-way resumes from its last checkpoint (one every steps / --curve-points steps, its BC prior's too).

The protocol, fixed from BC's side before any Q-Transformer run:

1. Calibration (`--calibrate`, or automatically when calibration.json is missing and --demos is not
   given): BC on demonstrations only (our bc method, the `default` preset's network), for each count in
   --demo-counts (scripted-expert demonstrations with 0.1 action noise, each on its own task
   variation), evaluated on held-out variations. The count whose mean success over tasks and seeds lies
   in --band (0.3-0.6) and is closest to its middle is chosen (no count in the band: the one closest
   to it). calibration.json records it; later stages read it. No Q-Transformer number is looked at.
2. Autonomous data: the calibration's BC policy at the chosen count (seed 0) is run closed-loop through
   `qtransformer.collect.collect` with epsilon-greedy exploration over bins (each action dimension
   takes a uniform bin with probability epsilon; per task, the episodes alternate between the
   --epsilons levels in equal shares; temperature 0), over every one of the 50 training variations in
   turn (collection resets are consecutive seeds, variation = seed % 50), so most are variations no
   demonstration shows. Source label 'autonomous'. The episodes come in chunks of the 1x size; the 3x
   and 10x datasets hold the 1x chunk and more, so the scaling datasets are nested.
3. Datasets: `main` = demonstrations + 1x autonomous; `no_auto_success` = the same without the
   successful autonomous episodes (the paper's real-robot protocol); `scale_Nx` = demonstrations + Nx.
4. Evaluation: held-out variations. Training data comes from MetaWorld's MT1 variations of benchmark
   seed 0 (demonstrations: --data-seed); evaluation episode i runs variation i % 50 of benchmark seed
   7777 + i // 50, placements no training episode starts from (checked: protocol.heldout_check).
   Every method and seed is evaluated on the same episodes, greedily.
5. Methods (same data, same gradient steps at batch 256, same evaluation): `qtransformer` is the
   `default` preset unchanged (K = 256 bins, d_model 128, 2 layers, conservative_bins 16, value head
   at the data's mean return, no imitation head, a BC prior on the successful episodes for decoding);
   `qtransformer_paper` is the `paper` preset (the paper's objective at the same size); BC
   (demonstrations only / all / successful episodes) uses the default preset's network with
   --algo.method bc; IQL and CQL are d3rlpy's defaults (bench.compare);
   the ablations are the default with alpha 0, without the Monte-Carlo bound, and with the CQL-style
   log-sum-exp regulariser. Each run is evaluated at --curve-points evenly spaced steps (learning curves).

Writes summary.json ({"methods": {name: {"mean", "std", "per_seed"}}, "protocol": {...}, plus
"variants", "scaling", "calibration", "curves", "per_task", "data"}), table.md, success.png,
curves.png and scaling.png into --out. They cover every finished run in --out that matches this
invocation's settings (steps, evaluation, each method's own preset, its seeds), the methods it names and
those an earlier invocation ran, so running one method later adds it to the table instead of replacing it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np

from bench import compare

TASKS = "push-v3,pick-place-v3,peg-insert-side-v3,door-open-v3,drawer-open-v3"
EVAL_BENCHMARK_SEED = 7777  # MT1 seed of the held-out variations (training data: benchmark seed 0 / --data-seed)
VARIATIONS = 50  # MetaWorld's variations per MT1 benchmark seed
EVAL_BATCH = 10  # held-out episodes run side by side (a MetaWorld env costs about 0.5 s and 30 MB to make)

# Method -> (preset, overrides of its TrainConfig); CQL and IQL come from d3rlpy (bench.compare).
OURS: dict[str, tuple[str, dict]] = {
    "qtransformer": ("default", {}),
    "qtransformer_paper": ("paper", {}),
    "bc_demos": ("default", {"algo": {"method": "bc"}, "source_mix": {"demonstration": 1.0}}),
    "bc_all": ("default", {"algo": {"method": "bc"}}),
    "bc_filtered": ("default", {"algo": {"method": "bc"}, "only_successful": True}),
    "qt_no_conservative": ("default", {"algo": {"alpha": 0.0}}),
    "qt_no_mc_bound": ("default", {"algo": {"mc_bound": False}}),
    "qt_lse_regularizer": ("default", {"algo": {"regularizer": "cql"}}),
}
PROTOCOL_OURS = tuple(OURS)  # the protocol's methods; the options below run only when named
OURS["qt_fourier4"] = ("default", {"model": {"bin_fourier": 4}})  # bin tokens plus Fourier features (docs/algorithm.md)
# Demonstrations drawn at their share of the 1x data (809 of 21,332 steps, 3.8 %) on every dataset: on
# the 10x data it keeps each demonstration step sampled as often as at 1x (the data-scaling runs).
OURS["qt_demo_share"] = ("default", {"source_mix": {"demonstration": 0.04}})
# `default`'s values with 3-step returns, trained without the prior (the prior acts at decoding only, so
# bench.prior --values qt_nstep3_values decodes them with the BC runs kept here, as `default` would).
OURS["qt_nstep3_values"] = ("default", {"algo": {"n_step": 3}, "prior": "none"})
# `default`'s values with a discount whose horizon 1 / (1 - gamma) = 100 steps spans this regime's successful
# episodes (51-184 steps), no prior (decoded by bench.prior --values qt_gamma099_values, as above).
OURS["qt_gamma099_values"] = ("default", {"algo": {"gamma": 0.99}, "prior": "none"})
# `default`'s values with half and twice the conservative term's strength (alpha 1.0 per 16-bin-equivalent
# unseen bin, never varied here but for 0), no prior (decoded by bench.prior --values, as above).
OURS["qt_alpha05_values"] = ("default", {"algo": {"alpha": 0.5}, "prior": "none"})
OURS["qt_alpha2_values"] = ("default", {"algo": {"alpha": 2.0}, "prior": "none"})
D3RLPY = ("iql", "cql")
METHODS = tuple(OURS) + D3RLPY
LABELS = compare.LABELS | {
    "qtransformer": "Q-Transformer (`default` preset)",
    "qtransformer_paper": "Q-Transformer, the paper's objective (`paper` preset)",
    "qt_fourier4": "Q-Transformer, bin tokens with Fourier features (`--model.bin-fourier 4`)",
    "qt_demo_share": "Q-Transformer, demonstrations at 4 % of each batch (`--source-mix demonstration 0.04`)",
    "qt_nstep3_values": "Q-Transformer's values with 3-step returns, no prior (`--algo.n-step 3 --prior none`)",
    "qt_gamma099_values": "Q-Transformer's values with gamma 0.99, no prior (`--algo.gamma 0.99 --prior none`)",
    "qt_alpha05_values": "Q-Transformer's values with alpha 0.5, no prior (`--algo.alpha 0.5 --prior none`)",
    "qt_alpha2_values": "Q-Transformer's values with alpha 2, no prior (`--algo.alpha 2 --prior none`)",
}
# Network sizes: the `default` preset's, or the `smoke` preset's (tests only).
NETWORKS = {"default": {}, "smoke": {"batch_size": 32, "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "encoder_hidden": 64}, "algo": {"warmup_steps": 5}}}
# The settings a finished run must match to be reused ("prior": the BC prior a Q-Transformer run trains
# first, train --prior, runs from before the key had none; "prior_weight": its decoding weight, runs
# from before the key decoded a prior at 0.01).
MATCH = ("steps", "eval_episodes", "curve_points", "preset", "overrides", "network", "evaluation", "prior", "prior_weight")
MATCH_DEFAULTS = {"prior": "none"}
EVALUATION = f"held-out: episode i runs variation i % {VARIATIONS} of MT1 benchmark seed {EVAL_BENCHMARK_SEED} + i // {VARIATIONS}"


@dataclass
class Args:
    """Q-Transformer against BC, IQL and CQL in the paper's regime: few demonstrations, closed-loop autonomous data."""

    quick: bool = False
    """About 40-60 minutes on 2 cores: 1 seed, 1500 steps, 10 held-out episodes per task, 3 curve points,
    calibration on 1, 2, 4, 8 demonstrations with 1 seed, at most 50 autonomous episodes per task at 1x,
    scaling 1x and 3x only, 4 methods on the variant and Q-Transformer alone on the 3x dataset."""
    out: Path = Path("bench/results/regime")
    """Results folder: calibration.json, datasets/, runs/, summary.json, table.md, *.png."""
    tasks: str = TASKS
    """MetaWorld tasks (comma-separated)."""
    calibrate: bool = False
    """Run the calibration stage only (BC on demonstrations) and write calibration.json."""
    demos: Optional[int] = None
    """Demonstrations per task; default: the count fixed by calibration.json."""
    demo_counts: tuple[int, ...] = (1, 2, 4, 8, 16)
    """Calibration: the demonstration counts per task tried."""
    band: tuple[float, float] = (0.3, 0.6)
    """Calibration: the band BC-on-demonstrations' success should fall into."""
    calibration_seeds: int = 3
    """Calibration: BC seeds per count."""
    autonomous: Optional[int] = None
    """Autonomous episodes per task in the 1x dataset; default round(demos * 92 / 8) (the paper's 8 %
    demonstrations), at least 10 (--quick: at most 50)."""
    scale: tuple[int, ...] = (1, 3, 10)
    """Data scaling: multiples of the 1x autonomous episodes (1 is the main dataset)."""
    epsilons: tuple[float, ...] = (0.1, 0.3)
    """Collection: epsilon-greedy levels (per task, the episodes alternate between them)."""
    seeds: int = 5
    """Training seeds per method."""
    steps: int = 20000
    """Gradient steps per run, every method (calibration too)."""
    collector_steps: Optional[int] = None
    """Gradient steps of the collector (BC on demonstrations, seed 0) that records the autonomous data;
    default --steps. Fix it to compare budgets on the same data."""
    eval_episodes: int = 50
    """Held-out evaluation episodes per task (50: every held-out variation once)."""
    curve_points: int = 5
    """Evaluations per run, evenly spaced (the last at the end): the learning curves."""
    methods: tuple[str, ...] = PROTOCOL_OURS + D3RLPY
    """Methods on the main dataset (also: qt_fourier4, qt_demo_share, qt_nstep3_values and qt_gamma099_values, options measured beside the protocol)."""
    variant_methods: tuple[str, ...] = ("qtransformer", "qtransformer_paper", "bc_demos", "bc_all", "bc_filtered", "iql", "cql")
    """Methods on the dataset without the successful autonomous episodes."""
    scale_methods: tuple[str, ...] = ("qtransformer", "qtransformer_paper", "bc_all", "bc_filtered", "iql", "cql")
    """Methods on the 3x and 10x datasets."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where our methods train (auto: CUDA when present; fp32 as on the CPU); d3rlpy's peers and
    every evaluation stay on the CPU. Runs on another device draw other floats: compare within one device."""
    jobs: int = 2
    """Runs side by side (one CPU thread each unless --threads)."""
    threads: Optional[int] = None
    """CPU threads per run (default: 1 when --jobs > 1, else 2). Set 1 when another benchmark shares the
    cores: two runs of 2 threads each on 2 cores slow each other several times over."""
    data_seed: int = 0
    """Seed of the demonstrations."""
    network: Literal["default", "smoke"] = "default"
    """'default': the default preset's network; 'smoke': a tiny one (for the tests only)."""
    write_docs: bool = False
    """Replace the generated block of docs/benchmarks.md with the tables."""
    no_train: bool = False
    """Train and collect nothing new: report what is on disk."""
    final_episodes: Optional[int] = None
    """Also evaluate every finished run's final policy on this many held-out episodes per task (episodes
    0..N-1, the same for every method; the curve's are the first --eval-episodes of them) and report it
    beside the curve's last point. Reads the policies on disk and trains nothing, so it works with
    --no-train; each result is kept in its run's JSON and reused. d3rlpy's runs keep no policy: listed as such."""

    def __post_init__(self) -> None:
        compare.threads_per_run(self.threads, self.jobs)  # a bad --threads stops here
        if self.quick:
            self.seeds, self.steps, self.eval_episodes, self.curve_points = 1, 1500, 10, 3
            self.calibration_seeds, self.demo_counts, self.scale = 1, (1, 2, 4, 8), (1, 3)
            self.variant_methods = ("qtransformer", "qtransformer_paper", "bc_all", "bc_filtered")
            self.scale_methods = ("qtransformer",)
            if self.out == Path("bench/results/regime"):
                self.out = Path("bench/results/regime_quick")
        for name in ("methods", "variant_methods", "scale_methods"):
            unknown = sorted(set(getattr(self, name)) - set(METHODS))
            if unknown:
                raise SystemExit(f"--{name.replace('_', '-')}: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
        if 1 not in self.scale:
            raise SystemExit("--scale must include 1 (the main dataset)")
        if self.final_episodes is not None and self.final_episodes < 1:
            raise SystemExit(f"--final-episodes must be >= 1 (held-out episodes per task), got {self.final_episodes}")
        if self.data_seed == EVAL_BENCHMARK_SEED:
            raise SystemExit(f"--data-seed {EVAL_BENCHMARK_SEED} is the held-out benchmark seed; choose another")

    @property
    def named_methods(self) -> set[str]:
        """Every method this invocation runs, on any dataset."""
        return set(self.methods) | set(self.variant_methods) | set(self.scale_methods)

    @property
    def task_list(self) -> list[str]:
        return [t for t in self.tasks.split(",") if t]


# -- held-out evaluation ------------------------------------------------------------------------------
_ENVS: dict = {}


def _envs(name: str, bseed: int, n: int) -> list:
    """n environments of task `name` on MT1 benchmark seed `bseed`, made once per process."""
    from qtransformer.envs.metaworld_tasks import make_metaworld_env

    pool = _ENVS.setdefault((name, bseed), [])
    while len(pool) < n:
        pool.append(make_metaworld_env(name, seed=bseed, vary_task=True))
    return pool[:n]


def heldout_success(act: Callable, name: str, episodes: int, benchmark_seed: int = EVAL_BENCHMARK_SEED) -> float:
    """Success rate of `act` (a batch of observations -> a batch of actions) on `episodes` held-out
    episodes of task `name`: episode i runs variation i % 50 of MT1 benchmark seed 7777 + i // 50
    (`benchmark_seed` + i // 50: bench.prior's validation variations)."""
    from qtransformer.evaluate import success_of

    wins = []
    for start in range(0, episodes, EVAL_BATCH):
        ids = list(range(start, min(start + EVAL_BATCH, episodes)))
        by_seed: dict[int, list[int]] = {}
        for i in ids:
            by_seed.setdefault(benchmark_seed + i // VARIATIONS, []).append(i)
        envs, variations = [], []
        for bseed, group in by_seed.items():
            envs += _envs(name, bseed, len(group))
            variations += [i % VARIATIONS for i in group]
        obs = [env.reset(seed=v)[0] for env, v in zip(envs, variations, strict=True)]
        active = np.ones(len(envs), bool)
        success = np.zeros(len(envs), bool)
        while active.any():
            idx = np.nonzero(active)[0]
            actions = np.asarray(act(np.stack([obs[i] for i in idx])))
            for j, i in enumerate(idx):
                obs[i], r, terminated, truncated, info = envs[i].step(actions[j])
                success[i] |= success_of(info, r)
                if terminated or truncated:
                    active[i] = False
        wins += success.tolist()
    return float(np.mean(wins))


def heldout_check(dataset: Path, tasks: list[str], episodes: int) -> float:
    """The smallest max-norm distance between an evaluation episode's first observation and any training
    episode's first observation (0 would mean a seen variation; MetaWorld resets a variation exactly)."""
    from qtransformer.data import EpisodeStore

    ds = EpisodeStore.open(dataset).to_dataset()
    nearest = np.inf
    for t, name in enumerate(ds.task_names):
        starts = ds.observations[ds.episode_starts[:-1][ds.episode_task == t]]
        for i in range(min(episodes, VARIATIONS)):
            obs0 = _envs(name, EVAL_BENCHMARK_SEED, 1)[0].reset(seed=i)[0]
            nearest = min(nearest, float(np.abs(starts - obs0).max(axis=1).min()))
    return nearest


# -- runs ---------------------------------------------------------------------------------------------
def run_one(spec: dict) -> dict:
    """Train one method on one dataset with one seed, evaluate it on held-out variations, write the JSON."""
    import torch

    from qtransformer.fileio import atomic_write_text

    torch.set_num_threads(spec["threads"])
    out = Path(spec["result"])
    out.parent.mkdir(parents=True, exist_ok=True)
    code = compare.code_version()
    run = _run_ours(spec) if spec["method"] in OURS else compare._run_d3rlpy(spec, task_success=heldout_success)
    result = {k: spec[k] for k in ("method", "dataset", "seed", *MATCH)} | run | {"code": code, "device": compare.resolve_device(spec["device"])}
    atomic_write_text(out, json.dumps(result, indent=1))
    return result


def run_config(spec: dict):
    """The TrainConfig of one run of ours (a spec from spec_for), trained into the folder beside its JSON."""
    from qtransformer.config import apply_overrides, preset

    steps = spec["steps"]
    cfg = apply_overrides(preset(spec["preset"]), NETWORKS[spec["network"]], "network")
    cfg = apply_overrides(cfg, {
        "dataset": spec["dataset"], "out": str(Path(spec["result"]).with_suffix("")), "seed": spec["seed"], "steps": steps,
        "device": spec["device"], "eval_every": 0, "eval_episodes": 0, "save_every": max(1, steps // spec["curve_points"]),
        "keep_checkpoints": 0, "log_every": min(50, steps), "progress": False, "prefetch": 2,
    }, "bench.regime")
    return apply_overrides(cfg, spec["overrides"], f"method {spec['method']}")


def killed_at(run_dir: Path) -> Optional[str]:
    """Where a run of ours in `run_dir` was stopped, if it can resume: 'step N' (its last checkpoint),
    'its prior' (killed while training its BC prior), or None (nothing to resume: a fresh start)."""
    from qtransformer.checkpoint import CheckpointError, last_checkpoint

    try:
        ckpt = last_checkpoint(run_dir)
        if ckpt is not None:
            return f"step {int(ckpt.name.split('_')[1])}"
        return "its prior" if last_checkpoint(run_dir / "prior") is not None else None
    except CheckpointError:  # a checkpoint left incomplete: start again
        return None


def _run_ours(spec: dict) -> dict:
    from qtransformer.checkpoint import CheckpointError
    from qtransformer.config import ConfigError
    from qtransformer.train import train

    cfg = run_config(spec)
    run_dir = Path(cfg.out)
    t = time.perf_counter()
    resumed = killed_at(run_dir)
    if resumed is not None:  # train refuses a checkpoint of other settings (an earlier method or preset here)
        try:
            train(dataclasses.replace(cfg, resume=True))
            print(f"{run_dir}: resumed from {resumed}", flush=True)
        except (ConfigError, CheckpointError) as e:
            print(f"{run_dir}: not resumed, started again ({e})", flush=True)
            resumed = None
    if resumed is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        train(cfg)
    train_s = time.perf_counter() - t
    checkpoints = sorted(p for p in (run_dir / "checkpoints").glob("step_*") if p.is_dir())
    curve, per_task = [], {}
    for ckpt in checkpoints:
        per_task = checkpoint_success(ckpt, spec["eval_episodes"])
        curve.append([int(ckpt.name.split("_")[1]), float(np.mean(list(per_task.values())))])
    # The final policy stays (for bench.diagnose and --final-episodes), not the rest. Its resume state goes
    # first: from then on killed_at sees nothing to resume, and a run killed here starts again.
    shutil.rmtree(checkpoints[-1] / "training_state", ignore_errors=True)
    for ckpt in checkpoints[:-1]:
        shutil.rmtree(ckpt)
    shutil.rmtree(run_dir / "prior", ignore_errors=True)  # a BC prior's run: every checkpoint carries its final network
    run = {"success_rate": curve[-1][1], "per_task": per_task, "curve": curve, "wall_s": time.perf_counter() - t, "train_s": train_s}
    return run | ({"resumed_from": resumed} if resumed is not None else {})  # its times count only what ran after


def checkpoint_success(ckpt: Path, episodes: int) -> dict[str, float]:
    """Held-out success of the policy saved at `ckpt`, per task, on held-out episodes 0..episodes-1."""
    from qtransformer import QTPolicy

    policy = QTPolicy.from_checkpoint(ckpt)
    names = list(policy.meta.get("task_names") or [])
    multi = policy.net.task_embedding is not None  # a single-task policy takes no task id
    return {
        name: heldout_success(lambda obs, t=t: policy.act(obs, task=t if multi else None), name, episodes)  # noqa: B023 - called within this iteration
        for t, name in enumerate(names)
    }


def final_checkpoint(result_path: Path) -> Optional[Path]:
    """The final policy a finished run of ours keeps beside its JSON (None for d3rlpy's runs, which keep none)."""
    steps = sorted(p for p in (result_path.with_suffix("") / "checkpoints").glob("step_*") if (p / "model").is_dir())
    return steps[-1] if steps else None


def final_eval_one(job: dict) -> dict:
    """Evaluate one run's final policy on job['episodes'] held-out episodes per task; keep it in the run's JSON."""
    import torch

    from qtransformer.fileio import atomic_write_text

    torch.set_num_threads(job["threads"])
    t = time.perf_counter()
    per_task = checkpoint_success(Path(job["checkpoint"]), job["episodes"])
    entry = {"episodes": job["episodes"], "evaluation": EVALUATION, "checkpoint_step": int(Path(job["checkpoint"]).name.split("_")[1]),
             "success_rate": float(np.mean(list(per_task.values()))), "per_task": per_task, "code": compare.code_version(),
             "wall_s": time.perf_counter() - t}
    path = Path(job["result"])
    result = json.loads(path.read_text())
    result["final_eval"] = entry
    atomic_write_text(path, json.dumps(result, indent=1))
    return entry


def final_evaluations(args: Args, specs: list[dict]) -> None:
    """--final-episodes: evaluate the final policy of every finished run that has none at this size yet."""
    todo, missing = [], []
    for s in specs:
        path, old = Path(s["result"]), finished(s)
        if old is None:
            continue
        fe = old.get("final_eval") or {}
        if fe.get("episodes") == args.final_episodes and fe.get("evaluation") == EVALUATION:
            continue
        ckpt = final_checkpoint(path)
        if ckpt is None:
            missing.append(f"{s['method']} seed {s['seed']}")
            continue
        todo.append({"result": str(path), "checkpoint": str(ckpt), "episodes": args.final_episodes,
                     "threads": compare.threads_per_run(args.threads, args.jobs), "label": f"{s['method']} {Path(s['dataset']).name} seed {s['seed']}"})
    print(f"final policies on {args.final_episodes} held-out episodes per task: {len(todo)} to evaluate"
          + (f"; no policy kept for {', '.join(missing)}" if missing else ""), flush=True)

    def report(job: dict, e: dict) -> None:
        print(f"{job['label']:>40}: {e['success_rate']:.3f} on {e['episodes']} episodes per task ({e['wall_s']:.0f} s)", flush=True)

    if args.jobs <= 1 or len(todo) <= 1:
        for j in todo:
            report(j, final_eval_one(j))
    else:  # a progress bar, and one failed evaluation does not stop the others
        compare.run_in_pool(final_eval_one, todo, args.jobs, lambda j: j["label"])


def prior_of(preset_name: str, overrides: dict) -> tuple[str, Optional[float]]:
    """(the --prior a method of ours trains with, its --prior-weight or None without a prior): ('none',
    None) for BC and d3rlpy's methods, which take none."""
    from qtransformer.config import apply_overrides, preset

    if preset_name == "d3rlpy":
        return "none", None
    return compare.prior_setting(apply_overrides(preset(preset_name), overrides))


def spec_for(args: Args, method: str, dataset: Path, seed: int, folder: str) -> dict:
    preset_name, overrides = OURS.get(method, ("d3rlpy", {}))
    prior, prior_weight = prior_of(preset_name, overrides)
    return {
        "method": method, "dataset": str(dataset), "seed": seed, "steps": args.steps, "eval_episodes": args.eval_episodes,
        "curve_points": args.curve_points, "preset": preset_name, "overrides": overrides, "network": args.network,
        "evaluation": EVALUATION, "prior": prior, "prior_weight": prior_weight, "threads": compare.threads_per_run(args.threads, args.jobs), "device": args.device,
        "result": str(args.out / "runs" / folder / method / f"seed{seed}.json"),
    }


def finished(spec: dict) -> Optional[dict]:
    """The result on disk of a run with these settings, or None."""
    path = Path(spec["result"])
    old = json.loads(path.read_text()) if path.exists() else None
    if old is None:
        return None
    defaults = MATCH_DEFAULTS | {"prior_weight": compare.recorded_prior_weight(old)}
    return old if all(old.get(k, defaults.get(k)) == spec[k] for k in MATCH) else None


def run_folder(paths: dict[str, Path], data: str) -> str:
    """Where the runs on dataset `data` ('main', 'no_auto_success', 'scale_Nx') go under --out/runs: demosD_autoA/data."""
    return f"{paths['main'].parent.name}/{data}"


def kept_runs(args: Args, paths: dict[str, Path], specs: list[dict]) -> list[dict]:
    """The finished runs on disk of the methods this invocation does not name, on each of its datasets and
    seeds, that match its settings (steps, evaluation, each method's own preset): the summary and table
    cover them too, so a later invocation for one method does not drop the others from summary.json."""
    named = {(s["method"], s["dataset"]) for s in specs}
    out = []
    for data, path in paths.items():
        for m in METHODS:
            if (m, str(path)) in named:
                continue
            out += [r for r in (finished(spec_for(args, m, path, seed, run_folder(paths, data))) for seed in range(args.seeds)) if r is not None]
    return out


def execute(args: Args, specs: list[dict], label: str) -> list[dict]:
    """Run the specs not already on disk with matching settings; return every result."""
    results, todo = [], []
    for s in specs:
        old = finished(s)
        if old is not None:
            results.append(old)
        else:
            todo.append(s)
    compare.say_runs(specs, len(results), len(todo), args.no_train, args.jobs, f"{label}: ")
    if args.no_train:
        return results
    if not todo:
        return results
    if args.jobs <= 1:
        for s in todo:
            results.append(_report(s, run_one(s)))
        return results
    from qtransformer.workers import process_pool  # exits with this process (a killed run leaves no worker)

    with process_pool(args.jobs) as pool:
        futures = {pool.submit(run_one, s): s for s in todo}
        for f in as_completed(futures):
            results.append(_report(futures[f], f.result()))
    return results


def _report(s: dict, r: dict) -> dict:
    print(f"{s['method']:>20} {Path(s['dataset']).name} seed {s['seed']}: held-out success {r['success_rate']:.2f} "
          f"(curve {' '.join(f'{v:.2f}' for _, v in r['curve'])}; {r['wall_s']:.0f} s)", flush=True)
    return r


# -- data ---------------------------------------------------------------------------------------------
def demos_dataset(args: Args, demos: int) -> Path:
    from qtransformer.data import EpisodeStore
    from qtransformer.envs.metaworld_tasks import make_metaworld_dataset

    path = args.out / "datasets" / f"demos{demos}"
    if not (path / "meta.json").exists():
        ds = make_metaworld_dataset(args.task_list, demos, 0, seed=args.data_seed, progress=False, workers=args.jobs)
        EpisodeStore.create(path, ds)  # atomic: a temporary folder renamed into place
        print(f"made {path}: {ds.num_episodes} demonstrations, {ds.num_steps} steps", flush=True)
    return path


def collect_chunk(job: dict) -> str:
    """Chunk c of the autonomous episodes: per task, `per_task` episodes of the collector policy,
    alternating over the epsilon levels, with consecutive collection seeds across chunks."""
    import torch

    from qtransformer import QTPolicy
    from qtransformer.collect import collect

    torch.set_num_threads(1)
    path = Path(job["path"])
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    policy = QTPolicy.from_checkpoint(job["collector"])
    n, eps = job["per_task"], job["epsilons"]
    for t, name in enumerate(job["tasks"]):
        first = job["chunk"] * n
        shares = [len(range(k, n, len(eps))) for k in range(len(eps))]
        offset = 0
        for level, count in zip(eps, shares, strict=True):
            if count:  # reset seeds 20_000_000 + first + offset + i: variation (first + offset + i) % 50
                task = t if policy.net.task_embedding is not None else None  # a single-task policy takes no task id
                collect(policy, tmp, count, env_id=f"metaworld:{name}", epsilon=level, seed=first + offset, task=task, progress=False)
            offset += count
    os.replace(tmp, path)
    return str(path)


def _episodes(ds, keep: Optional[np.ndarray] = None, instructions: Optional[list[str]] = None) -> list[dict]:
    """The episodes of an EpisodeDataset as dicts (for from_episodes), those with keep[e] only."""
    from qtransformer.data.dataset import STEP_FIELDS

    out = []
    for e in range(ds.num_episodes):
        if keep is not None and not keep[e]:
            continue
        a, b = ds.episode_starts[e], ds.episode_starts[e + 1]
        ep = {k: getattr(ds, k)[a:b] for k in STEP_FIELDS}
        ep["source"], ep["task"] = ds.episode_source[e], int(ds.episode_task[e])
        if instructions is not None:
            ep["instruction"] = instructions[int(ds.episode_task[e])]
        out.append(ep)
    return out


def assemble(path: Path, demos: Path, chunks: list[Path], drop_successful_autonomous: bool = False) -> Path:
    """Demonstrations + the chunks' autonomous episodes (optionally without the successful ones) as one dataset."""
    from qtransformer.data import EpisodeDataset, EpisodeStore
    from qtransformer.envs.metaworld_tasks import instruction_for

    if (path / "meta.json").exists():
        return path
    base = EpisodeStore.open(demos).to_dataset()
    names = base.task_names
    instructions = [instruction_for(n) for n in names]
    episodes = _episodes(base, instructions=instructions)
    for c in chunks:
        ds = EpisodeStore.open(c).to_dataset()
        remap = [names.index(n) for n in ds.task_names]
        keep = ~ds.episode_success() if drop_successful_autonomous else None
        for ep in _episodes(ds, keep):
            ep["task"] = remap[ep["task"]]
            ep["instruction"] = instructions[ep["task"]]
            episodes.append(ep)
    ds = EpisodeDataset.from_episodes(episodes, base.action_low, base.action_high, env_id=base.env_id, task_names=names)
    EpisodeStore.create(path, ds)  # atomic: a temporary folder renamed into place
    print(f"made {path}: {ds.num_episodes} episodes, {ds.num_steps} steps", flush=True)
    return path


def data_settings(args: Args) -> dict:
    """What the datasets on disk depend on (besides the counts in their names)."""
    return {"tasks": args.task_list, "data_seed": args.data_seed, "epsilons": list(args.epsilons), "collector_steps": collector_steps(args), "network": args.network}


def check_data_settings(args: Args) -> None:
    """Datasets under --out were made with these settings, or there are none yet; else stop."""
    path = args.out / "datasets" / "settings.json"
    now = data_settings(args)
    if path.exists():
        old = json.loads(path.read_text())
        if old != now:
            diff = ", ".join(f"{k} {old.get(k)!r} -> {now[k]!r}" for k in now if old.get(k) != now[k])
            raise SystemExit(f"{args.out}/datasets were made with other settings ({diff}); pass another --out")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(now, indent=1))


def make_datasets(args: Args, demos: int, collector: Path) -> dict[str, Path]:
    from qtransformer.envs.metaworld_tasks import paper_mix_autonomous

    per_chunk = args.autonomous if args.autonomous is not None else max(10, paper_mix_autonomous(demos))
    if args.quick and args.autonomous is None:
        per_chunk = min(per_chunk, 50)  # --quick: at most 50 per task, one per training variation
    demo_path = demos_dataset(args, demos)
    root = args.out / "datasets" / f"demos{demos}_auto{per_chunk}"
    chunk_paths = [root / "chunks" / f"chunk{c}" for c in range(max(args.scale))]
    todo = [p for p in chunk_paths if not (p / "meta.json").exists()]
    if todo and not args.no_train:
        root.joinpath("chunks").mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        jobs = [{"path": str(p), "chunk": chunk_paths.index(p), "per_task": per_chunk, "tasks": args.task_list,
                 "epsilons": list(args.epsilons), "collector": str(collector)} for p in todo]
        if args.jobs <= 1:
            for j in jobs:
                collect_chunk(j)
        else:
            from qtransformer.workers import process_pool  # exits with this process (a killed run leaves no worker)

            with process_pool(min(args.jobs, len(jobs))) as pool:
                list(pool.map(collect_chunk, jobs))
        print(f"collected {len(todo)} chunk(s) of {per_chunk} autonomous episodes per task in {time.perf_counter() - t:.0f} s", flush=True)
    missing = [p.name for p in chunk_paths if not (p / "meta.json").exists()]
    if missing:
        raise SystemExit(f"{root}: autonomous chunks {', '.join(missing)} not collected (drop --no-train)")
    paths = {"main": assemble(root / "main", demo_path, chunk_paths[:1])}
    paths["no_auto_success"] = assemble(root / "no_auto_success", demo_path, chunk_paths[:1], drop_successful_autonomous=True)
    for k in sorted(args.scale):
        if k != 1:
            paths[f"scale_{k}x"] = assemble(root / f"scale_{k}x", demo_path, chunk_paths[:k])
    return paths


# -- calibration ----------------------------------------------------------------------------------------
def calibration_settings(args: Args) -> dict:
    return {
        "tasks": args.task_list, "demo_counts": list(args.demo_counts), "band": list(args.band), "seeds": args.calibration_seeds,
        "steps": args.steps, "eval_episodes": args.eval_episodes, "curve_points": args.curve_points, "network": args.network,
        "data_seed": args.data_seed, "evaluation": EVALUATION,
    }


def calibrate(args: Args) -> dict:
    """BC on demonstrations only for every count; choose the count (see the module docstring)."""
    demo_paths = {n: demos_dataset(args, n) for n in args.demo_counts}
    specs = [spec_for(args, "bc_demos", demo_paths[n], s, f"calibration/demos{n}") for s in range(args.calibration_seeds) for n in args.demo_counts]
    results = execute(args, specs, "calibration (BC on demonstrations)")
    rates = {}
    for n in args.demo_counts:
        rs = [r for r in results if Path(r["dataset"]).name == f"demos{n}"]
        if rs:
            rates[n] = {"mean": float(np.mean([r["success_rate"] for r in rs])), "per_seed": [r["success_rate"] for r in rs],
                        "per_task": {t: float(np.mean([r["per_task"][t] for r in rs])) for t in rs[0]["per_task"]},
                        "curve": [float(np.mean([r["curve"][i][1] for r in rs])) for i in range(len(rs[0]["curve"]))]}
    if not rates:
        raise SystemExit("calibration: no finished runs (drop --no-train)")
    lo, hi = args.band
    mid = (lo + hi) / 2
    inside = [n for n in rates if lo <= rates[n]["mean"] <= hi]
    pool = inside or list(rates)
    chosen = min(pool, key=lambda n: (abs(rates[n]["mean"] - mid) if inside else min(abs(rates[n]["mean"] - lo), abs(rates[n]["mean"] - hi)), n))
    cal = calibration_settings(args) | {
        "demos": chosen, "in_band": bool(inside), "rule": "the count whose mean BC-on-demonstrations success "
        "lies in the band, closest to its middle; none in the band: the count closest to the band",
        "counts": {str(n): v for n, v in rates.items()},
    }
    (args.out / "calibration.json").write_text(json.dumps(cal, indent=1))
    print("calibration: " + ", ".join(f"{n} demos {v['mean']:.2f}" for n, v in rates.items()) + f" -> {chosen} demonstrations per task", flush=True)
    return cal


def collector_steps(args: Args) -> int:
    return args.steps if args.collector_steps is None else args.collector_steps


def collector_for(args: Args, demos: int) -> Path:
    """The BC-on-demonstrations policy that collects the autonomous data: a finished seed-0 run at this
    count with --collector-steps gradient steps (the calibration's own when its budget matches, whatever
    its evaluation settings), else one trained here."""
    at = dataclasses.replace(args, steps=collector_steps(args))
    folders = [f"calibration/demos{demos}", f"collector/demos{demos}_steps{at.steps}"]
    specs = [spec_for(at, "bc_demos", demos_dataset(args, demos), 0, f) for f in folders]
    for spec in specs:
        done = json.loads(Path(spec["result"]).read_text()) if Path(spec["result"]).exists() else {}
        if (done.get("steps"), done.get("network")) == (at.steps, at.network) and Path(spec["result"]).with_suffix("").is_dir():
            return Path(spec["result"]).with_suffix("")
    spec = specs[0] if at.steps == args.steps else specs[1]
    execute(dataclasses.replace(at, jobs=1), [spec], "collector (BC on demonstrations, seed 0)")
    return Path(spec["result"]).with_suffix("")


# -- summaries ----------------------------------------------------------------------------------------------
def stats(xs: list[float]) -> dict:
    return {"mean": float(np.mean(xs)), "std": float(np.std(xs)), "per_seed": [float(x) for x in xs]}


def data_stats(path: Path) -> dict:
    d = compare.data_success(path)
    from qtransformer.data import EpisodeStore

    sources, _, _ = EpisodeStore.open(path).episode_table()
    d["episodes_by_source"] = {s: int((sources == s).sum()) for s in sorted(set(sources))}
    return d


def summarize(args: Args, results: list[dict], paths: dict[str, Path], cal: Optional[dict], demos: int) -> dict:
    from qtransformer.data import EpisodeStore

    by: dict = {}
    for r in results:
        by.setdefault((Path(r["dataset"]).name, r["method"]), []).append(r)
    for rs in by.values():
        rs.sort(key=lambda r: r["seed"])

    def table(name: str) -> dict:  # every method with runs on this dataset, in METHODS' order
        return {m: stats([r["success_rate"] for r in by[(name, m)]]) for m in METHODS if (name, m) in by}

    main = paths["main"].name
    curves = {m: {"steps": [c[0] for c in rs[0]["curve"]], "success": [float(np.mean([r["curve"][i][1] for r in rs])) for i in range(len(rs[0]["curve"]))],
                  "per_seed": [[float(c[1]) for c in r["curve"]] for r in rs]}
              for (d, m), rs in by.items() if d == main}
    per_task = {m: {t: float(np.mean([r["per_task"][t] for r in rs])) for t in rs[0]["per_task"]} for (d, m), rs in by.items() if d == main}
    scaling: dict = {}
    scaled = {m for k in args.scale if k != 1 for m in METHODS if (paths[f"scale_{k}x"].name, m) in by}  # methods with runs on more data
    for k in sorted(args.scale):
        name = main if k == 1 else paths[f"scale_{k}x"].name
        for m in METHODS:
            if m in scaled and (name, m) in by:
                scaling.setdefault(m, {})[str(k)] = stats([r["success_rate"] for r in by[(name, m)]])
    sources, _, _ = EpisodeStore.open(paths["main"]).episode_table()
    protocol = {
        "tasks": args.task_list, "demonstrations_per_task": demos, "demos_from": "calibration.json" if args.demos is None else "--demos",
        "autonomous_per_task_1x": int((sources == "autonomous").sum()) // len(args.task_list),
        "collector": f"BC on the demonstrations (our bc method, the {args.network} network, {collector_steps(args)} steps), seed 0, closed loop through qtransformer.collect",
        "exploration": f"epsilon-greedy over bins per action dimension, epsilon alternating over {list(args.epsilons)}, temperature 0",
        "evaluation": EVALUATION, "eval_episodes_per_task": args.eval_episodes, "seeds": args.seeds, "steps": args.steps,
        "batch_size": 256 if args.network == "default" else NETWORKS[args.network]["batch_size"], "curve_points": args.curve_points,
        "ours": {m: {"preset": p, "overrides": o} for m, (p, o) in OURS.items() if any(bm == m for _, bm in by)}, "network": args.network,
        "scale": list(args.scale), "quick": args.quick, "data_seed": args.data_seed,
        "heldout_check": {"min_distance_to_a_training_start": heldout_check(paths[f"scale_{max(args.scale)}x"] if max(args.scale) > 1 else paths["main"], args.task_list, args.eval_episodes)},
    }
    summary = {
        "methods": table(main),
        "protocol": protocol,
        "variants": {"no_auto_success": {"methods": table(paths["no_auto_success"].name)}},
        "scaling": scaling,
        "calibration": cal,
        "curves": curves,
        "per_task": per_task,
        "data": {k: data_stats(p) for k, p in paths.items()},
    }
    if args.final_episodes is not None:
        summary["final_eval"] = final_eval_summary(args, by, {p.name: k for k, p in paths.items()})
    return summary


def final_eval_summary(args: Args, by: dict, labels: dict[str, str]) -> dict:
    """--final-episodes: per dataset ('main', 'no_auto_success', 'scale_Nx') and method, the final policies'
    success on N held-out episodes per task (mean, std and per seed over the seeds that have one), per task,
    and the curve's last point of the same seeds for comparison."""
    out: dict = {"episodes_per_task": args.final_episodes, "evaluation": EVALUATION, "datasets": {}}
    for (name, m), rs in sorted(by.items(), key=lambda kv: (kv[0][0], list(METHODS).index(kv[0][1]))):
        done = [r for r in rs if (r.get("final_eval") or {}).get("episodes") == args.final_episodes]
        row: dict = {"seeds": [r["seed"] for r in done], "without_policy": [r["seed"] for r in rs if r not in done]}
        if done:
            row |= stats([r["final_eval"]["success_rate"] for r in done])
            row["per_task"] = {t: float(np.mean([r["final_eval"]["per_task"][t] for r in done])) for t in done[0]["final_eval"]["per_task"]}
            row["curve_last_point"] = stats([r["success_rate"] for r in done])
        out["datasets"].setdefault(labels.get(name, name), {})[m] = row
    return out


def _cell(s: Optional[dict]) -> str:
    if not s:
        return ""
    return f"{s['mean']:.2f} ± {s['std']:.2f}" if len(s["per_seed"]) > 1 else f"{s['mean']:.2f}"


def markdown(args: Args, summary: dict, command: str) -> str:
    p, data = summary["protocol"], summary["data"]
    tasks = p["tasks"]
    short = [t.replace("-v3", "") for t in tasks]
    main = data["main"]
    lines = [
        compare.command_markdown(command),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()) + "  ",
        f"Data: {len(tasks)} MetaWorld tasks, {p['demonstrations_per_task']} demonstrations per task ({p['demos_from']}) + "
        f"{p['autonomous_per_task_1x']} autonomous episodes per task from the BC policy ({p['exploration']}); "
        f"{main['episodes']} episodes, {main['steps']} steps. Every method: {p['steps']} gradient steps, {p['seeds']} seed(s), "
        f"{p['eval_episodes_per_task']} held-out episodes per task ({p['evaluation']}).",
    ]
    cal = summary.get("calibration")
    if cal:
        lines += ["", "Calibration (BC on demonstrations only, held-out success): " + ", ".join(
            f"{n} demos {v['mean']:.2f}" for n, v in cal["counts"].items()) + f"; chosen: {cal['demos']}" + ("" if cal["in_band"] else " (none in the band)")]
    variant = summary["variants"]["no_auto_success"]["methods"]
    lines += [
        "",
        "| method | success (mean ± std over seeds) | " + " | ".join(short) + " | without successful autonomous episodes |",
        "|---|---|" + "---|" * len(tasks) + "---|",
    ]
    for src, rate in main["by_source"].items():
        cells = " | ".join(f"{main['by_task'][t].get(src, float('nan')):.2f}" for t in tasks)
        lines.append(f"| *data: {src} episodes* | {rate:.2f} | {cells} | |")
    for m, s in summary["methods"].items():
        cells = " | ".join(f"{summary['per_task'][m][t]:.2f}" for t in tasks)
        lines.append(f"| {LABELS[m]} | {_cell(s)} | {cells} | {_cell(variant.get(m))} |")
    lines += curve_table(summary["curves"], list(summary["methods"]))
    if summary["scaling"]:
        ks = [str(k) for k in sorted(p["scale"])]
        lines += ["", "Data scaling (held-out success against the autonomous data, demonstrations fixed):", "",
                  "| method | " + " | ".join(f"{k}x" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for m, s in summary["scaling"].items():
            lines.append(f"| {LABELS[m]} | " + " | ".join(_cell(s.get(k)) for k in ks) + " |")
    if "final_eval" in summary:
        lines += final_eval_table(summary["final_eval"], tasks, p["eval_episodes_per_task"])
    return "\n".join(lines) + "\n"


def final_eval_table(fe: dict, tasks: list[str], curve_episodes: int) -> list[str]:
    """The final policies on --final-episodes held-out episodes per task, beside the curve's last point."""
    n = fe["episodes_per_task"]
    lines = ["", f"The final policies again, on {n} held-out episodes per task (episodes 0-{n - 1}; the curve's "
             f"last point used the first {curve_episodes}), mean ± std over the seeds listed:", "",
             f"| data | method | seeds | {n} episodes per task | per seed | curve's last point, same seeds | "
             + " | ".join(t.replace("-v3", "") for t in tasks) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(tasks)]
    for data, methods in fe["datasets"].items():
        for m, row in methods.items():
            if not row["seeds"]:
                lines.append("| " + " | ".join([data, LABELS[m], "none kept a policy"] + [""] * (3 + len(tasks))) + " |")
                continue
            cells = " | ".join(f"{row['per_task'][t]:.2f}" for t in tasks)
            per_seed = ", ".join(f"{v:.2f}" for v in row["per_seed"])
            lines.append(f"| {data} | {LABELS[m]} | {', '.join(map(str, row['seeds']))} | {_cell(row)} | {per_seed} | "
                         f"{_cell(row['curve_last_point'])} | {cells} |")
    return lines


def curve_table(curves: dict, methods: list) -> list[str]:
    """The learning curves as a table: mean over seeds at each point, the per-seed last points, and the best
    point of the mean curve. The protocol's figure is the last point (what a user gets without held-out
    success to stop on); the best point is what stopping at one step chosen on held-out success would give,
    shown so that a method that peaks early and falls is not hidden, nor one that is still rising flattered."""
    rows = [m for m in methods if m in curves]
    if not rows:
        return []
    steps = curves[rows[0]]["steps"]
    lines = ["", "Learning curves (held-out success, mean over seeds, at each evaluation; the last point is the table's figure):", "",
             "| method | " + " | ".join(f"{s // 1000}k" if s >= 1000 and s % 1000 == 0 else str(s) for s in steps) + " | best point | last point per seed |",
             "|---|" + "---|" * (len(steps) + 2)]
    for m in rows:
        c = curves[m]
        best = int(np.argmax(c["success"]))
        per_seed = ", ".join(f"{run[-1]:.2f}" for run in c.get("per_seed", []))
        lines.append(f"| {LABELS[m]} | " + " | ".join(f"{v:.2f}" for v in c["success"]) + f" | {c['success'][best]:.2f} (at {steps[best]}) | {per_seed} |")
    return lines


def plots(summary: dict, out: Path) -> None:
    plt = compare.pyplot()
    if plt is None:
        return
    methods = summary["methods"]
    names = list(methods)
    compare.success_bars(
        plt, names, [methods[m]["mean"] for m in names], [methods[m]["std"] for m in names], LABELS, "held-out success rate",
        "The paper's regime on MetaWorld: success at the end of training (mean ± std over seeds)", out / "success.png",
    )
    compare.curve_lines(
        plt, {m: (c["steps"], c["success"]) for m, c in summary["curves"].items()}, LABELS, "gradient steps",
        "held-out success (mean over seeds and tasks)", out / "curves.png",
    )
    if summary["scaling"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, s in summary["scaling"].items():
            ks = sorted(s, key=int)
            ax.errorbar([int(k) for k in ks], [s[k]["mean"] for k in ks], yerr=[s[k]["std"] for k in ks], marker="o", capsize=3, label=LABELS[m])
        ax.set_xscale("log")
        ax.set_xlabel("autonomous data (multiple of the 1x dataset)")
        ax.set_ylabel("held-out success")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "scaling.png", dpi=110)
        plt.close(fig)


DOCS_BEGIN, DOCS_END = "<!-- bench.regime: begin -->", "<!-- bench.regime: end -->"
PICTURES = (("success", "success.png"), ("learning curves", "curves.png"), ("data scaling", "scaling.png"))


# -- main -----------------------------------------------------------------------------------------------------
def main(args: Args) -> None:
    try:
        import metaworld  # noqa: F401
    except ImportError:
        raise SystemExit("bench.regime needs MetaWorld: pip install -e '.[sim,bench]' (or bash scripts/setup.sh --bench)") from None
    if args.named_methods & set(D3RLPY) and not args.calibrate:
        import contextlib
        import io

        try:
            with contextlib.redirect_stderr(io.StringIO()):
                import d3rlpy  # noqa: F401
        except ImportError:
            raise SystemExit("CQL and IQL come from d3rlpy: bash scripts/setup.sh --bench, or drop them with --methods") from None
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    check_data_settings(args)
    cal_path = args.out / "calibration.json"
    cal = json.loads(cal_path.read_text()) if cal_path.exists() else None
    if cal is not None and any(cal.get(k) != v for k, v in calibration_settings(args).items()):
        cal = None  # calibrated with other settings: calibrate again (finished runs that match are reused)
    if args.calibrate or (args.demos is None and cal is None):
        cal = calibrate(args)  # BC alone: no Q-Transformer run has happened at this point
        if args.calibrate:
            return
    demos = args.demos if args.demos is not None else int(cal["demos"])
    collector = collector_for(args, demos)
    paths = make_datasets(args, demos, collector)
    specs = [spec_for(args, m, paths["main"], s, run_folder(paths, "main")) for s in range(args.seeds) for m in args.methods]
    specs += [spec_for(args, m, paths["no_auto_success"], s, run_folder(paths, "no_auto_success")) for s in range(args.seeds) for m in args.variant_methods]
    for k in sorted(args.scale):
        if k != 1:
            specs += [spec_for(args, m, paths[f"scale_{k}x"], s, run_folder(paths, f"scale_{k}x")) for s in range(args.seeds) for m in args.scale_methods]
    results = execute(args, specs, "methods")
    if args.final_episodes is not None:
        final_evaluations(args, specs)
        results = [r for r in (finished(s) for s in specs) if r is not None]  # now with their final_eval
    results += kept_runs(args, paths, specs)
    summary = summarize(args, results, paths, cal, demos)
    summary["versions"] = compare.versions() | {"code": compare.code_line(results)}
    summary["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(args).items()}
    summary["wall_s"] = time.perf_counter() - t0
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    text = markdown(args, summary, compare.report_command("bench.regime", args.out, args.no_train))
    (args.out / "table.md").write_text(text)
    plots(summary, args.out)
    print(text)
    print(f"wrote {args.out}/summary.json, table.md and plots ({summary['wall_s'] / 60:.1f} min)")
    if args.write_docs:
        compare.write_docs(text, args.out, begin=DOCS_BEGIN, end=DOCS_END, prefix="regime", pictures=PICTURES)
        print("updated docs/benchmarks.md")


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
