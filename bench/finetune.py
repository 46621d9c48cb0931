"""Online fine-tuning against the collect-then-retrain loop and online training from scratch.

    python -m bench.finetune [--seeds 3] [--env-steps 50000] [--jobs 2] [--quick] [--out bench/results/finetune]

The protocol (fixed before any fine-tuning number was seen), on the built-in task PointReach3D:

- offline checkpoint, per seed s: the `builtin` preset (K = 16, 4000 steps) on the demo's dataset (100
  demonstrations + 400 autonomous episodes, seed 0), training seed s;
- three arms per seed, each given the same environment steps (--env-steps) and the same exploration
  (epsilon-greedy over bins, 0.1 falling linearly to 0.02 over the first half; --epsilon-start,
  --epsilon-end and --temperature change it for every arm):
  - `finetune`: `qtransformer finetune` from the offline checkpoint (optimizer restored), batches half
    offline and half online (--online-fraction for another share; 0 is the control that collects but
    trains on offline data alone), --updates-per-step updates per environment step;
  - `retrain`: the slow outer loop: --rounds rounds, each collecting env-steps / rounds steps with the
    current checkpoint (`qtransformer collect`, epsilon of the schedule at the round's start) into a copy
    of the offline dataset, then training the offline recipe anew on the grown dataset;
  - `scratch`: `qtransformer finetune --from-scratch --no-offline`, the same network and bins from a new
    initialisation on online data only;
- evaluation: the greedy policy on the same --eval-episodes evaluation seeds of `qtransformer eval`, at
  step 0 (the offline checkpoint) and every --eval-every environment steps (retrain: after each round).

`--checkpoint RUN --env ID` starts from a given checkpoint instead (every seed from that one checkpoint;
the seeds differ in exploration, resets and batches; the scratch arm takes its architecture, bins and
normaliser; each retrain round trains the recipe of the run that made it, its config.json with its
steps, anew on the run's dataset grown by the collected episodes), for example bench.regime's
MetaWorld checkpoint on one of its tasks, with `--heldout-episodes N` for the success on
bench.regime's held-out placements at the start and the end beside the curve (finetune and retrain).

Reported per arm: the success curve (mean over seeds), the final success, the gain over the offline
checkpoint and the dip (the offline success minus the lowest evaluation after the start, in points).
Writes OUT/summary.json ({"methods": {name: {"mean", "std", "per_seed"}}, "protocol", "curves",
"start", "gain", "dip"}), OUT/table.md and OUT/curves.png. Finished runs are reused (resumable).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import tyro

ARMS = ("finetune", "retrain", "scratch")
# Settings a spec names only when given, so runs made before they existed still match their specs (and are reused).
OPTIONAL_SETTINGS = ("lr", "online_fraction", "checkpoint", "env", "dataset", "heldout_episodes", "epsilon_start", "epsilon_end",
                     "temperature", "prior")
LABELS = {"finetune": "online fine-tuning (qtransformer finetune)", "retrain": "collect, then retrain (the outer loop)",
          "scratch": "online from scratch"}


@dataclass
class Args:
    """Online fine-tuning against collect-then-retrain and online-from-scratch on the built-in task."""

    out: Path = Path("bench/results/finetune")
    """Results folder: dataset/, offline/, runs/, summary.json, table.md, curves.png."""
    seeds: int = 3
    """Seeds: offline checkpoint, fine-tuning and evaluation order per seed."""
    env_steps: int = 50_000
    """Environment steps per arm and seed."""
    updates_per_step: float = 0.25
    """Fine-tuning updates per environment step (finetune and scratch)."""
    lr: Optional[float] = None
    """Fine-tuning learning rate (finetune and scratch); None: the checkpoint's (the builtin preset's 3e-4)."""
    online_fraction: Optional[float] = None
    """Share of each fine-tuning batch drawn from the online episodes (finetune only); None: `qtransformer finetune`'s
    default (0.5). 0 is the control that collects but trains on the offline data alone."""
    checkpoint: Optional[Path] = None
    """Start from this trained checkpoint (a run folder of `qtransformer train` or bench.regime, or a model folder)
    instead of the built-in offline recipe: every seed and arm starts from it (retrain: a run folder, whose
    config.json is the recipe each round trains anew)."""
    env: Optional[str] = None
    """Environment to fine-tune on (one task, e.g. metaworld:push-v3); None: the checkpoint's."""
    dataset: Optional[Path] = None
    """Offline dataset mixed into the batches; None: the one the checkpoint's run recorded."""
    heldout_episodes: Optional[int] = None
    """With a metaworld:<task> env: also the success on bench.regime's held-out placements at the start and the
    end, this many episodes (the fine-tuning curve itself is on `qtransformer eval`'s seeds)."""
    epsilon_start: Optional[float] = None
    """Exploration at the start (every arm); None: `qtransformer finetune`'s 0.1."""
    epsilon_end: Optional[float] = None
    """Exploration after the anneal over the first half (every arm); None: `qtransformer finetune`'s 0.02."""
    temperature: Optional[float] = None
    """Sample each dimension's bin from softmax(values / temperature) before epsilon (every arm, retrain's collection
    too); None: `qtransformer finetune`'s 0 (greedy bins, epsilon alone)."""
    num_envs: int = 4
    """Environments side by side (finetune and scratch)."""
    eval_every: int = 5000
    """Evaluation interval in environment steps (finetune and scratch)."""
    eval_episodes: int = 200
    """Evaluation episodes (the same seeds for every arm)."""
    rounds: int = 5
    """Rounds of the collect-then-retrain loop."""
    prior: Optional[str] = None
    """The built-in offline recipe's --prior (its retrain rounds' too); None: 'none', the protocol's start (the
    `builtin` preset before it carried a prior). 'auto': the preset as it is now, a BC prior on the
    demonstrations trained first, which the checkpoint carries and fine-tuning keeps decoding with."""
    offline_steps: int = 4000
    """Gradient steps of the built-in offline recipe (the builtin preset's), also each of its retrain rounds' (with
    --checkpoint, a round trains as many steps as the checkpoint's run did)."""
    arms: tuple[str, ...] = ARMS
    """Arms to run."""
    jobs: int = 2
    """Runs side by side, one CPU thread each."""
    no_train: bool = False
    """Run nothing: summarise the finished runs on disk (arms and seeds with a result)."""
    quick: bool = False
    """A check that everything runs: 1 seed, 3000 environment steps, 2 rounds, 20 evaluation episodes, 300 offline steps."""


def offline_checkpoint(out: Path, seed: int, steps: int, prior: Optional[str] = None) -> Path:
    from qtransformer.config import PRIOR_WEIGHT, apply_overrides, preset
    from qtransformer.data import EpisodeStore
    from qtransformer.envs.builtin_dataset import make_builtin_dataset
    from qtransformer.train import train

    data = out / "dataset"
    if not (data / "meta.json").exists():
        EpisodeStore.create(data, make_builtin_dataset(100, 400, seed=0))
    run = out / "offline" / f"seed{seed}"
    done = run / "checkpoints" / "last"
    prior = prior or "none"  # the protocol's start: the preset before its prior
    cfg = apply_overrides(preset("builtin"), {"dataset": str(data), "out": str(run), "seed": seed, "steps": steps, "eval_episodes": 0,
                                              "progress": False, "threads": 1, "save_every": steps, "prior": prior})
    made = json.loads((run / "config.json").read_text()) if done.exists() else {}
    same_weight = prior == "none" or made.get("prior_weight", PRIOR_WEIGHT) == cfg.prior_weight  # starts from before the key decoded at it
    if made.get("steps") == steps and made.get("prior", "none") == prior and same_weight:
        return run
    shutil.rmtree(run, ignore_errors=True)
    train(cfg)
    return run


def recipe_prior_weight(prior: Optional[str]) -> dict:
    """{"prior_weight": w} for the built-in recipe with a prior (the `builtin` preset's weight, 0.03 since
    2026-12-07), else {}: arm results from before it, decoded at 0.01, no longer match their specs."""
    from qtransformer.config import preset

    return {} if prior is None else {"prior_weight": preset("builtin").prior_weight}


def optional_settings(args: Args, arm: str) -> dict:
    """The OPTIONAL_SETTINGS given (paths as text) that the arm uses: a spec names them only then."""
    unused = {"heldout_episodes"} if arm == "scratch" else set()  # held out: the finetune and retrain arms' start and end
    return {k: str(v) if isinstance(v, Path) else v for k in OPTIONAL_SETTINGS if (v := getattr(args, k)) is not None and k not in unused}


def run_arm(spec: dict) -> dict:
    """One arm for one seed -> {"arm", "seed", "curve": [[env step, success], ...], "wall_s"}; reused when its result exists."""
    import torch

    torch.set_num_threads(1)
    out, arm, seed = Path(spec["out"]), spec["arm"], spec["seed"]
    result_file = out / "runs" / f"{arm}_seed{seed}.json"
    if result_file.exists() and json.loads(result_file.read_text())["spec"] == spec:
        return json.loads(result_file.read_text())
    t0 = time.time()
    offline = Path(spec["checkpoint"]) if "checkpoint" in spec else offline_checkpoint(out, seed, spec["offline_steps"], spec.get("prior"))
    run_dir = out / "runs" / f"{arm}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    curve = _retrain(spec, offline, run_dir) if arm == "retrain" else _finetune(spec, offline, run_dir, scratch=arm == "scratch")
    result = {"spec": spec, "arm": arm, "seed": seed, "curve": curve, "wall_s": time.time() - t0}
    if spec.get("heldout_episodes"):
        end = run_dir / f"round{spec['rounds']}" if arm == "retrain" else run_dir
        result["heldout"] = [heldout(offline, spec), heldout(end, spec)]  # [start, end]
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=1))
    return result


def heldout(checkpoint: Path, spec: dict) -> float:
    """Greedy success of the checkpoint on bench.regime's held-out placements of the fine-tuning task."""
    from bench.regime import heldout_success
    from qtransformer.policy import QTPolicy

    policy = QTPolicy.from_checkpoint(checkpoint)
    env_id = spec.get("env") or policy.env_id
    name = QTPolicy.env_task_name(env_id) if env_id else None
    if name is None:
        raise SystemExit(f"--heldout-episodes: held-out placements exist for one metaworld:<task> env, got {env_id!r}")
    task = policy.task_for_env(env_id)
    return heldout_success(lambda obs: policy.act(obs, task=task), name, spec["heldout_episodes"])


def _schedule(spec: dict):
    from qtransformer.finetune import FinetuneConfig

    return FinetuneConfig(checkpoint=Path("."), env_steps=spec["env_steps"], **_exploration(spec))  # its epsilon(): the schedule every arm follows


def _exploration(spec: dict) -> dict:
    """The exploration settings a spec names (FinetuneConfig's defaults for the others)."""
    return {k: spec[k] for k in ("epsilon_start", "epsilon_end", "temperature") if k in spec}


def _finetune(spec: dict, offline: Path, run_dir: Path, scratch: bool) -> list:
    from qtransformer.finetune import FinetuneConfig, finetune, read_curve

    cfg = FinetuneConfig(
        checkpoint=offline, out=run_dir, env_steps=spec["env_steps"], updates_per_step=spec["updates_per_step"], num_envs=spec["num_envs"],
        eval_every=spec["eval_every"], eval_episodes=spec["eval_episodes"], save_every=spec["env_steps"], seed=spec["seed"],
        from_scratch=scratch, offline=not scratch, progress=False, threads=1, lr=spec.get("lr"), env=spec.get("env"),
        dataset=Path(spec["dataset"]) if "dataset" in spec else None,
        **({"online_fraction": spec["online_fraction"]} if "online_fraction" in spec and not scratch else {}),
        **_exploration(spec),
    )
    finetune(cfg)
    return [list(p) for p in read_curve(run_dir)]


def _retrain(spec: dict, offline: Path, run_dir: Path) -> list:
    from qtransformer.collect import collect
    from qtransformer.config import apply_overrides
    from qtransformer.evaluate import evaluate_policy
    from qtransformer.policy import QTPolicy
    from qtransformer.train import train

    env = spec.get("env")

    def success(ckpt: Path) -> float:
        return evaluate_policy(QTPolicy.from_checkpoint(ckpt), env, spec["eval_episodes"])["success_rate"]

    recipe, offline_data = retrain_recipe(spec, offline)
    data = run_dir / "data"
    shutil.copytree(offline_data, data)
    schedule = _schedule(spec)
    ckpt, steps, episodes = offline, 0, 0
    curve = [[0, success(ckpt)]]
    for k in range(1, spec["rounds"] + 1):
        budget = round(spec["env_steps"] * k / spec["rounds"])
        policy = QTPolicy.from_checkpoint(ckpt)
        eps = schedule.epsilon(steps)
        while steps < budget:  # each call on fresh reset seeds; the round ends less than one episode past its budget
            r = collect(policy, data, _episodes_to_collect(budget - steps, steps, episodes), env_id=env, epsilon=eps,
                        temperature=schedule.temperature, seed=1_000_000 * spec["seed"] + episodes, progress=False)
            steps, episodes = steps + r["steps"], episodes + r["episodes"]
        round_dir = run_dir / f"round{k}"
        ckpt = train(apply_overrides(recipe, {"dataset": str(data), "out": str(round_dir)}))
        curve.append([steps, success(ckpt)])
    return curve


def _episodes_to_collect(remaining: int, steps: int, episodes: int, most: int = 10) -> int:
    """Episodes for the next `collect` call of a retrain round with `remaining` environment steps left: one
    at first, then as many as the mean episode so far fits in what is left (at least 1, at most `most`),
    so a round ends less than one episode past its budget (10 at a time overshot by up to 10 episodes)."""
    if episodes == 0:
        return 1
    return max(1, min(most, int(remaining // (steps / episodes))))


def retrain_recipe(spec: dict, offline: Path):
    """(the TrainConfig each retrain round trains anew on the grown dataset, the offline dataset it grows):
    the built-in recipe (the builtin preset, --offline-steps), or with --checkpoint the recipe of the run
    that made it (its config.json: every setting, its steps included) on --dataset or the run's dataset.
    Every round: the arm's seed, no evaluation inside, one thread, the device the other arms use (auto)."""
    from qtransformer.config import TrainConfig, apply_overrides, preset
    from qtransformer.finetune import _start_point, training_run_config

    each_round = {"seed": spec["seed"], "eval_episodes": 0, "progress": False, "threads": 1, "resume": False}
    if "checkpoint" not in spec:
        recipe = apply_overrides(preset("builtin"), {**each_round, "steps": spec["offline_steps"], "save_every": spec["offline_steps"],
                                                         "prior": spec.get("prior") or "none"})
        return recipe, Path(spec["out"]) / "dataset"
    _, model_dir, recorded = _start_point(offline)
    config = training_run_config(model_dir)
    if config is None:
        raise SystemExit(f"--arms retrain: {offline} is not inside a `qtransformer train` run folder with its config.json, "
                         "so the recipe to retrain is unknown; give the run folder")
    recorded_config = json.loads(config.read_text())
    recipe = apply_overrides(TrainConfig(), {k: v for k, v in recorded_config.items() if k != "dataset"}, str(config))
    recipe = apply_overrides(recipe, {**each_round, "device": "auto", "save_every": recipe.steps})
    dataset = Path(spec["dataset"]) if "dataset" in spec else Path(recorded) if recorded else None
    if dataset is None or not (dataset / "meta.json").exists():
        raise SystemExit(f"--arms retrain: the offline dataset {dataset} of {config} is not found from here; pass --dataset DIR")
    return recipe, dataset


def summarize(args: Args, results: list[dict]) -> dict:
    by = {a: sorted((r for r in results if r["arm"] == a), key=lambda r: r["seed"]) for a in args.arms}
    methods, curves, start, gain, dip = {}, {}, {}, {}, {}
    for arm, rs in by.items():
        if not rs:
            continue
        final = [r["curve"][-1][1] for r in rs]
        methods[arm] = {"mean": float(np.mean(final)), "std": float(np.std(final)), "per_seed": final}
        starts = [r["curve"][0][1] for r in rs]
        start[arm] = float(np.mean(starts))
        gain[arm] = float(np.mean(final) - np.mean(starts))
        dip[arm] = float(np.mean([max(0.0, r["curve"][0][1] - min(s for _, s in r["curve"][1:])) for r in rs]))  # per seed, then the mean
        n = min(len(r["curve"]) for r in rs)
        curves[arm] = {"env_steps": [float(np.mean([r["curve"][i][0] for r in rs])) for i in range(n)],
                       "success": [float(np.mean([r["curve"][i][1] for r in rs])) for i in range(n)]}
    protocol = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()}
    if args.checkpoint is None:
        protocol.update(task="qtransformer/PointReach3D-v0", offline_data="builtin, 100 demonstrations + 400 autonomous episodes (seed 0)",
                        offline_recipe=f"preset builtin, {args.offline_steps} steps, prior {args.prior or 'none'}")
    else:
        protocol.update(task=args.env or "the checkpoint's", offline_data=str(args.dataset or "the checkpoint run's dataset"),
                        offline_recipe=f"the given checkpoint {args.checkpoint}, the same start for every seed")
    schedule = _schedule({"env_steps": args.env_steps, **optional_settings(args, "finetune")})
    protocol["exploration"] = (f"epsilon {schedule.epsilon_start:g} -> {schedule.epsilon_end:g} over the first half"
                               + (f", bins sampled at temperature {schedule.temperature:g}" if schedule.temperature > 0 else ""))
    held = {arm: [r["heldout"] for r in rs if "heldout" in r] for arm, rs in by.items()}
    return {"methods": methods, "protocol": protocol, "curves": curves, "start": start, "gain": gain, "dip": dip,
            "per_seed_curves": {a: [r["curve"] for r in rs] for a, rs in by.items()},
            "heldout": {a: {"start": float(np.mean([h[0] for h in hs])), "end": float(np.mean([h[1] for h in hs])), "per_seed": hs}
                        for a, hs in held.items() if hs}}


def markdown(summary: dict) -> str:
    lines = ["| arm | seeds | offline start | final (mean ± std) | per seed | gain (points) | largest dip (points, mean over seeds) |",
             "|---|---|---|---|---|---|---|"]
    for arm, m in summary["methods"].items():
        lines.append(f"| {LABELS[arm]} | {len(m['per_seed'])} | {summary['start'][arm]:.3f} | {m['mean']:.3f} ± {m['std']:.3f} | "
                     f"{', '.join(f'{x:.3f}' for x in m['per_seed'])} | {100 * summary['gain'][arm]:+.1f} | {100 * summary['dip'][arm]:.1f} |")
    lines += ["", "| arm | success at environment steps (mean over seeds) |", "|---|---|"]
    for arm, c in summary["curves"].items():
        lines.append(f"| {arm} | " + ", ".join(f"{int(n)}: {x:.3f}" for n, x in zip(c["env_steps"], c["success"], strict=True)) + " |")
    for arm, h in summary.get("heldout", {}).items():
        lines += ["", f"{arm}, held-out placements (bench.regime's): start {h['start']:.3f}, end {h['end']:.3f} (mean over seeds)"]
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    from bench.compare import pyplot

    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, c in summary["curves"].items():
        ax.plot(c["env_steps"], c["success"], marker="o", label=LABELS[arm], lw=2.5 if arm == "finetune" else 1.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"greedy success (mean over {summary['protocol']['seeds']} seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: Args) -> None:
    from bench.compare import run_in_pool

    if args.prior is not None and args.checkpoint is not None:
        raise SystemExit("--prior sets the built-in offline recipe's; a --checkpoint start carries the prior it was trained with: drop --prior")
    if args.quick:
        args.seeds, args.env_steps, args.rounds, args.eval_episodes, args.offline_steps, args.eval_every = 1, 3000, 2, 20, 300, 1000
    args.out.mkdir(parents=True, exist_ok=True)
    specs = [{"out": str(args.out), "arm": a, "seed": s, "env_steps": args.env_steps, "updates_per_step": args.updates_per_step,
              "num_envs": args.num_envs, "eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "rounds": args.rounds,
              "offline_steps": args.offline_steps, **optional_settings(args, a), **recipe_prior_weight(args.prior)}
             for s in range(args.seeds) for a in args.arms]
    if args.no_train:
        done = [json.loads(p.read_text()) for p in sorted((args.out / "runs").glob("*_seed*.json"))]
        specs = [s for s in specs if any(d["spec"] == s for d in done)]
    elif args.checkpoint is None:
        for s in range(args.seeds):  # the offline checkpoints first, so parallel arms never train the same one twice
            offline_checkpoint(args.out, s, args.offline_steps, args.prior)
    def name(s: dict) -> str:
        return f"{s['arm']} seed {s['seed']}"

    results = [run_arm(s) for s in specs] if args.no_train else run_in_pool(_run_and_report, specs, args.jobs, name)
    summary = summarize(args, results)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    table = markdown(summary)
    (args.out / "table.md").write_text(table + "\n")
    plot(summary, args.out / "curves.png")
    print(table)
    print(f"wrote {args.out / 'summary.json'}, {args.out / 'table.md'} and {args.out / 'curves.png'}")


def _run_and_report(spec: dict) -> dict:
    r = run_arm(spec)
    return {**r, "success_rate": r["curve"][-1][1], "train_s": r["wall_s"]}


if __name__ == "__main__":
    main(tyro.cli(Args))
