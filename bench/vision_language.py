"""The paper's policy on MetaWorld camera frames with instructions: Q-Transformer against BC on the
demonstrations, the same encoder for both, evaluated on the training instructions and on held-out
paraphrases of them (issue 13, part 6).

    python -m bench.vision_language                  # the full protocol (MT10, 64x64, 6 frames): a GPU machine
    python -m bench.vision_language --cpu            # the same comparison sized for a 2-core CPU machine (about an hour)
    python -m bench.vision_language --quick          # a pipeline check that fits a CPU (minutes)
    python -m bench.vision_language --no-train       # the table of the runs on disk

The protocol (fixed before any number was seen):

- data: `make-dataset metaworld --camera corner --image-size S` on the chosen tasks (default MT10):
  per task --demos scripted-expert demonstrations and --autonomous perturbed autonomous episodes
  (seed 0), each step with the 39-d state and the camera frame; the episodes are exactly the state
  datasets' (docs/metaworld.md);
- one multi-task policy per method and seed, both on the `default` preset's Transformer with the same
  encoders: the instruction embedded by --language-encoder (minilm: all-MiniLM-L6-v2), the frames by
  --image-encoder (FiLM-EfficientNet-B0 conditioned on the instruction, --image-tokens TokenLearner
  tokens per frame) over a window of --frames frames; the state vector stays beside the frames;
  - `qtransformer`: the default preset's learning rule;
  - `bc_demos`: behaviour cloning (cross-entropy over bins) on the demonstrations only, RT-1 style;
- evaluation: the greedy policy on the fixed evaluation seeds of `qtransformer eval`, --eval-episodes
  per task, once with each task's training instruction and once with a paraphrase never seen in
  training (PARAPHRASES): an unseen instruction must still name the task.

`--cpu` (fixed before any of its numbers, 2026-12-06): the same two methods and evaluation on MT10 at
what a 2-core machine without a GPU trains in under an hour: 10 demonstrations and 30 autonomous
episodes per task, 32x32 frames drawn with `--render fast` (no shadows or multisampling: the full
scene's frames cost about 0.1-0.2 s each in software, the fast ones about a sixth of that), a window of
1 frame, the small CNN (FiLM-EfficientNet-B0 trains at about 0.2 steps/s on one CPU core), the real
instruction encoder (minilm), 5000 gradient steps, 1 seed, 10 evaluation episodes per task and
instruction kind. It is a reduced reading of part 6, not its result.

Writes OUT/summary.json ({"methods": {name: {"mean", "std", "per_seed", "paraphrase": {"mean", "std",
"per_seed"}, "per_task": {...}}}, "protocol"}) and OUT/table.md. Finished runs are reused. With the
full scene, rendering costs about 0.1-0.2 s per frame on a CPU with OSMesa (python -m bench.camera), so
the full protocol is for a GPU machine (MUJOCO_GL=egl, --device auto).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import tyro

METHODS = {
    "qtransformer": {},
    "bc_demos": {"algo": {"method": "bc"}, "source_mix": {"demonstration": 1.0}},
}
LABELS = {"qtransformer": "Q-Transformer (default preset)", "bc_demos": "BC, demonstrations only (RT-1 style)"}
# Held-out paraphrases of envs.metaworld.MT10_INSTRUCTIONS: never in a training episode.
PARAPHRASES = {
    "reach-v3": "move the gripper to the target",
    "push-v3": "slide the puck over to the target spot",
    "pick-place-v3": "grab the puck and put it down on the target",
    "door-open-v3": "pull the door open",
    "drawer-open-v3": "pull the drawer out",
    "drawer-close-v3": "push the drawer shut",
    "button-press-topdown-v3": "push the button down from above",
    "peg-insert-side-v3": "put the peg sideways into the hole",
    "window-open-v3": "open the window by sliding it",
    "window-close-v3": "shut the window by sliding it",
}


@dataclass
class Args:
    """Q-Transformer against BC on MetaWorld camera frames with instructions, training and paraphrased instructions."""

    out: Path = Path("bench/results/vision_language")
    """Results folder: dataset/, runs/, summary.json, table.md."""
    tasks: str = "mt10"
    """'mt10' or MetaWorld task names separated by commas (each needs a paraphrase in PARAPHRASES)."""
    demos: int = 20
    """Demonstrations per task."""
    autonomous: int = 80
    """Perturbed autonomous episodes per task."""
    max_steps: int = 200
    """Time limit per episode."""
    camera: str = "corner"
    """MetaWorld camera."""
    image_size: int = 64
    """Frame width and height."""
    render: Literal["full", "fast"] = "full"
    """How frames are drawn: full (MetaWorld's scene as shipped) or fast (no shadows or multisampling)."""
    frames: int = 6
    """Frames per window (the paper: 6)."""
    image_encoder: str = "film-efficientnet-b0"
    """cnn, film-efficientnet-b0 or film-efficientnet-b3 (the same for both methods)."""
    image_tokens: int = 8
    """TokenLearner tokens per frame (0: one token)."""
    language_encoder: str = "minilm"
    """minilm (the language extra), hash or hf:<folder>."""
    steps: int = 20_000
    """Gradient steps per run."""
    seeds: int = 3
    """Training seeds per method."""
    eval_episodes: int = 50
    """Evaluation episodes per task and instruction kind."""
    device: str = "auto"
    """Training device."""
    threads: int = 0
    """CPU threads per training run (0: PyTorch's default); 1 when two runs share 2 cores."""
    jobs: int = 1
    """Runs trained at a time, each in its own process (with --threads 1 on a 2-core machine: 2)."""
    workers: int = 2
    """Processes making the dataset (one per task at most)."""
    methods: tuple[str, ...] = tuple(METHODS)
    """Methods to run."""
    no_train: bool = False
    """Run nothing: the table of the finished runs on disk."""
    cpu: bool = False
    """The comparison sized for a 2-core CPU machine (the docstring's --cpu paragraph)."""
    quick: bool = False
    """A pipeline check for a CPU: reach and push, 2 + 2 episodes of 10 steps, 32x32 frames, 1 frame,
    the small CNN, hashed n-grams, 20 steps, 1 seed, 1 evaluation episode."""


def apply_quick(args: Args) -> Args:
    if args.cpu and args.quick:
        raise SystemExit("--cpu and --quick are two sizes: pass one")
    if args.cpu:
        args.tasks, args.demos, args.autonomous, args.image_size, args.render, args.frames = "mt10", 10, 30, 32, "fast", 1
        args.image_encoder, args.image_tokens, args.language_encoder, args.steps, args.seeds, args.eval_episodes = "cnn", 0, "minilm", 5000, 1, 10
        args.device, args.threads, args.jobs = "cpu", 1, 2
    if args.quick:
        args.tasks, args.demos, args.autonomous, args.max_steps, args.image_size, args.frames = "reach-v3,push-v3", 2, 2, 10, 32, 1
        args.render = "fast"
        args.image_encoder, args.image_tokens, args.language_encoder, args.steps, args.seeds, args.eval_episodes = "cnn", 0, "hash", 20, 1, 1
        args.device, args.workers = "cpu", 1
    return args


def task_list(args: Args) -> list[str]:
    from qtransformer.envs.metaworld import tasks_from_env_id

    tasks = tasks_from_env_id(f"metaworld:{args.tasks}")
    missing = [t for t in tasks if t not in PARAPHRASES]
    if missing:
        raise SystemExit(f"--tasks: no held-out paraphrase for {missing}; add them to PARAPHRASES in bench/vision_language.py")
    return tasks


def data_settings(args: Args) -> dict:
    settings = {k: getattr(args, k) for k in ("tasks", "demos", "autonomous", "max_steps", "camera", "image_size")}
    return settings if args.render == "full" else settings | {"render": args.render}  # full: the folders made before keep their names


def dataset(args: Args) -> Path:
    """The camera dataset, made once per data settings (its folder name carries their hash)."""
    from qtransformer.data import EpisodeStore
    from qtransformer.envs.metaworld_dataset import make_metaworld_dataset

    settings = data_settings(args)
    path = args.out / f"dataset_{hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]}"
    if not (path / "meta.json").exists():
        ds = make_metaworld_dataset(task_list(args), args.demos, args.autonomous, "perturbed", seed=0, max_steps=args.max_steps,
                                    workers=args.workers, camera=args.camera, image_size=args.image_size, render=args.render)
        EpisodeStore.create(path, ds)
        (path / "bench_settings.json").write_text(json.dumps(settings, indent=1))
    return path


def run_spec(args: Args, data: Path, method: str, seed: int) -> dict:
    return {"method": method, "seed": seed, "dataset": str(data), "steps": args.steps, "eval_episodes": args.eval_episodes,
            "model": {"language_encoder": args.language_encoder, "image_encoder": args.image_encoder, "image_tokens": args.image_tokens,
                      "frames": args.frames}, "device": args.device}


def run_one(spec: dict, out: Path, threads: int = 0) -> dict:
    """Train one method with one seed and evaluate it on both instruction kinds; reused when its result exists."""
    from qtransformer.config import apply_overrides, preset
    from qtransformer.data import EpisodeStore
    from qtransformer.envs.metaworld import single_task_env_ids
    from qtransformer.evaluate import evaluate_policy
    from qtransformer.fileio import atomic_write_text
    from qtransformer.policy import QTPolicy
    from qtransformer.train import train

    name = f"{spec['method']}_seed{spec['seed']}"
    result_file = out / "runs" / f"{name}.json"
    if result_file.exists() and json.loads(result_file.read_text())["spec"] == spec:
        return json.loads(result_file.read_text())
    run_dir = out / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.time()
    cfg = apply_overrides(preset("default"), {
        "dataset": spec["dataset"], "out": str(run_dir), "seed": spec["seed"], "steps": spec["steps"], "device": spec["device"],
        "eval_episodes": 0, "save_every": spec["steps"], "progress": False, "model": spec["model"], "threads": threads,
    } | METHODS[spec["method"]], f"method {spec['method']}")
    final = train(cfg)
    policy = QTPolicy.from_checkpoint(final, device="cpu")
    store = EpisodeStore.open(spec["dataset"])
    trained, paraphrased = {}, {}
    for task, env_id in zip(store.task_names, single_task_env_ids(store.env_id), strict=True):
        trained[task] = evaluate_policy(policy, env_id, spec["eval_episodes"], progress=False)["success_rate"]
        paraphrased[task] = evaluate_policy(policy, env_id, spec["eval_episodes"], progress=False, instruction=PARAPHRASES[task])["success_rate"]
    result = {"spec": spec, "success_rate": float(np.mean(list(trained.values()))), "paraphrase_success_rate": float(np.mean(list(paraphrased.values()))),
              "per_task": trained, "per_task_paraphrase": paraphrased, "wall_s": time.time() - t0}
    atomic_write_text(result_file, json.dumps(result, indent=1))
    print(f"{name}: training instructions {result['success_rate']:.3f}, paraphrases {result['paraphrase_success_rate']:.3f} "
          f"({result['wall_s'] / 60:.1f} min)", flush=True)
    return result


def summarize(args: Args, results: list[dict]) -> dict:
    methods = {}
    for m in args.methods:
        rs = sorted((r for r in results if r["spec"]["method"] == m), key=lambda r: r["spec"]["seed"])
        if not rs:
            continue
        a, b = [r["success_rate"] for r in rs], [r["paraphrase_success_rate"] for r in rs]
        tasks = list(rs[0]["per_task"])
        methods[m] = {"mean": float(np.mean(a)), "std": float(np.std(a)), "per_seed": a,
                      "paraphrase": {"mean": float(np.mean(b)), "std": float(np.std(b)), "per_seed": b},
                      "per_task": {t: float(np.mean([r["per_task"][t] for r in rs])) for t in tasks},
                      "per_task_paraphrase": {t: float(np.mean([r["per_task_paraphrase"][t] for r in rs])) for t in tasks}}
    protocol = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()}
    protocol["paraphrases"] = {t: PARAPHRASES[t] for t in task_list(args)}
    return {"methods": methods, "protocol": protocol}


def markdown(summary: dict) -> str:
    lines = ["| method | seeds | training instructions (mean ± std) | held-out paraphrases (mean ± std) |", "|---|---|---|---|"]
    for m, s in summary["methods"].items():
        p = s["paraphrase"]
        lines.append(f"| {LABELS[m]} | {len(s['per_seed'])} | {s['mean']:.3f} ± {s['std']:.3f} | {p['mean']:.3f} ± {p['std']:.3f} |")
    if summary["methods"]:
        tasks = list(next(iter(summary["methods"].values()))["per_task"])
        lines += ["", "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
        for m, s in summary["methods"].items():
            lines.append(f"| {m} (training / paraphrase) | " + " | ".join(f"{s['per_task'][t]:.2f} / {s['per_task_paraphrase'][t]:.2f}" for t in tasks) + " |")
    return "\n".join(lines)


def main(args: Args) -> Optional[dict]:
    args = apply_quick(args)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.no_train:
        results = [json.loads(p.read_text()) for p in sorted((args.out / "runs").glob("*_seed*.json"))]
    else:
        data = dataset(args)  # made once, before any run starts
        specs = [run_spec(args, data, m, s) for s in range(args.seeds) for m in args.methods]
        if args.jobs > 1 and len(specs) > 1:
            from qtransformer.workers import process_pool  # exits with this process (a killed run leaves no worker)

            with process_pool(min(args.jobs, len(specs))) as pool:
                results = list(pool.map(run_one, specs, [args.out] * len(specs), [args.threads] * len(specs)))
        else:
            results = [run_one(spec, args.out, args.threads) for spec in specs]
    summary = summarize(args, results)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    table = markdown(summary)
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    print(f"wrote {args.out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main(tyro.cli(Args))
