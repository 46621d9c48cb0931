"""The paper's policy on MetaWorld camera frames with instructions: Q-Transformer against BC on the
demonstrations, the same encoder for both, evaluated on the training instructions and on held-out
paraphrases of them (issue 13, part 6).

    python -m bench.vision_language                  # the full protocol (MT10, 64x64, 6 frames): a GPU machine
    python -m bench.vision_language --cpu            # the same comparison sized for a 2-core CPU machine (about an hour)
    python -m bench.vision_language --quick          # a pipeline check that fits a CPU (minutes)
    python -m bench.vision_language --no-train       # the table of the runs on disk
    python -m bench.vision_language --cpu --steps 10000 --out OUT2 --extend-from OUT   # continue OUT's runs to 10,000 steps

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
  (beside the protocol, `--methods ... qt_values`: the default preset's values decoded alone, no BC prior);
- evaluation: the greedy policy on the fixed evaluation seeds of `qtransformer eval`, --eval-episodes
  per task, once with each task's training instruction and once with a paraphrase never seen in
  training (PARAPHRASES): an unseen instruction must still name the task.

`--cpu` (fixed before any of its numbers, 2026-12-06): the same two methods and evaluation on MT10 at
what a 2-core machine without a GPU trains in under an hour: 10 demonstrations and 30 autonomous
episodes per task, 32x32 frames drawn with `--render fast` (no shadows or multisampling: the full
scene's frames cost about 0.1-0.2 s each in software, the fast ones about a sixth of that), a window of
1 frame, the small CNN (FiLM-EfficientNet-B0 trains at about 0.2 steps/s on one CPU core), the real
instruction encoder (minilm), 5000 gradient steps, 1 seed, 10 evaluation episodes per task and
instruction kind. It is a reduced reading of part 6, not its result. A flag given beside --cpu or
--quick (--steps, --seeds, ...) wins over the size's value.

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
    "qt_values": {"prior": "none"},  # beside the protocol: the default's values decoded alone (no BC prior)
}
LABELS = {"qtransformer": "Q-Transformer (default preset)", "bc_demos": "BC, demonstrations only (RT-1 style)",
          "qt_values": "Q-Transformer, values alone (default preset without its BC prior)"}
PROTOCOL_METHODS = ("qtransformer", "bc_demos")
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
    tasks: Optional[str] = None
    """'mt10' or MetaWorld task names separated by commas (each needs a paraphrase in PARAPHRASES).
    Default, like every field below left at None: the chosen size's value (SIZES: full, --cpu or --quick);
    a flag you pass wins over the size."""
    demos: Optional[int] = None
    """Demonstrations per task (full 20, --cpu 10, --quick 2)."""
    autonomous: Optional[int] = None
    """Perturbed autonomous episodes per task (full 80, --cpu 30, --quick 2)."""
    max_steps: Optional[int] = None
    """Time limit per episode (200; --quick 10)."""
    camera: str = "corner"
    """MetaWorld camera."""
    image_size: Optional[int] = None
    """Frame width and height (full 64, --cpu and --quick 32)."""
    render: Optional[Literal["full", "fast"]] = None
    """How frames are drawn: full (MetaWorld's scene as shipped; the full size) or fast (no shadows or
    multisampling; --cpu and --quick)."""
    frames: Optional[int] = None
    """Frames per window (full 6, the paper's; --cpu and --quick 1)."""
    image_encoder: Optional[str] = None
    """cnn, film-efficientnet-b0 or film-efficientnet-b3, the same for both methods (full
    film-efficientnet-b0; --cpu and --quick cnn)."""
    image_tokens: Optional[int] = None
    """TokenLearner tokens per frame, 0: one token (full 8; --cpu and --quick 0)."""
    language_encoder: Optional[str] = None
    """minilm (the language extra), hash or hf:<folder> (minilm; --quick hash)."""
    steps: Optional[int] = None
    """Gradient steps per run (full 20,000, --cpu 5000, --quick 20)."""
    seeds: Optional[int] = None
    """Training seeds per method (full 3, --cpu and --quick 1)."""
    eval_episodes: Optional[int] = None
    """Evaluation episodes per task and instruction kind (full 50, --cpu 10, --quick 1)."""
    device: Optional[str] = None
    """Training device (full auto; --cpu and --quick cpu)."""
    threads: Optional[int] = None
    """CPU threads per training run, 0: PyTorch's default (0; --cpu 1, for two runs on 2 cores)."""
    jobs: Optional[int] = None
    """Runs trained at a time, each in its own process (1; --cpu 2)."""
    workers: Optional[int] = None
    """Processes making the dataset, one per task at most (2; --quick 1)."""
    methods: tuple[str, ...] = PROTOCOL_METHODS
    """Methods to run (also: qt_values, the default preset's values without its BC prior, measured beside the
    protocol)."""
    extend_from: Optional[Path] = None
    """Continue the finished runs of an earlier --out with the same settings and fewer --steps from their
    last checkpoint (optimizer state included: the same updates a run of --steps from scratch makes), in a
    copy under --out; runs with no such earlier run start from scratch."""
    no_train: bool = False
    """Run nothing: the table of the finished runs on disk."""
    cpu: bool = False
    """The comparison sized for a 2-core CPU machine (the docstring's --cpu paragraph)."""
    quick: bool = False
    """A pipeline check for a CPU: reach and push, 2 + 2 episodes of 10 steps, 32x32 frames, 1 frame,
    the small CNN, hashed n-grams, 20 steps, 1 seed, 1 evaluation episode."""


SIZES: dict[str, dict] = {"full": {
    "tasks": "mt10", "demos": 20, "autonomous": 80, "max_steps": 200, "image_size": 64, "render": "full", "frames": 6,
    "image_encoder": "film-efficientnet-b0", "image_tokens": 8, "language_encoder": "minilm", "steps": 20_000, "seeds": 3,
    "eval_episodes": 50, "device": "auto", "threads": 0, "jobs": 1, "workers": 2,
}}
SIZES["cpu"] = SIZES["full"] | {  # the module docstring's --cpu paragraph
    "demos": 10, "autonomous": 30, "image_size": 32, "render": "fast", "frames": 1, "image_encoder": "cnn", "image_tokens": 0,
    "steps": 5000, "seeds": 1, "eval_episodes": 10, "device": "cpu", "threads": 1, "jobs": 2,
}
SIZES["quick"] = SIZES["full"] | {
    "tasks": "reach-v3,push-v3", "demos": 2, "autonomous": 2, "max_steps": 10, "image_size": 32, "render": "fast", "frames": 1,
    "image_encoder": "cnn", "image_tokens": 0, "language_encoder": "hash", "steps": 20, "seeds": 1, "eval_episodes": 1, "device": "cpu", "workers": 1,
}


def apply_size(args: Args) -> Args:
    """Fill every field left at None from the chosen size (full, --cpu or --quick); the flags given win."""
    if args.cpu and args.quick:
        raise SystemExit("--cpu and --quick are two sizes: pass one")
    size = SIZES["cpu" if args.cpu else "quick" if args.quick else "full"]
    for k, v in size.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
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
    name = f"dataset_{hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]}"
    path = args.out / name
    if args.extend_from is not None and not (path / "meta.json").exists():  # the runs continued trained on it: reuse it
        earlier = [args.extend_from / name] + [Path(json.loads(p.read_text())["spec"]["dataset"]) for p in sorted((args.extend_from / "runs").glob("*_seed*.json"))]
        path = next((p for p in earlier if p.name == name and (p / "meta.json").exists()), path)
    if not (path / "meta.json").exists():
        ds = make_metaworld_dataset(task_list(args), args.demos, args.autonomous, "perturbed", seed=0, max_steps=args.max_steps,
                                    workers=args.workers, camera=args.camera, image_size=args.image_size, render=args.render)
        EpisodeStore.create(path, ds)
        (path / "bench_settings.json").write_text(json.dumps(settings, indent=1))
    return path


def run_spec(args: Args, data: Path, method: str, seed: int) -> dict:
    """What a finished run must match to be reused; "prior" only for a method that trains a BC prior first (the
    `default` preset's --prior auto from 2026-12-06, auto-successful since 2026-12-07: runs from before either are trained again)."""
    from qtransformer.config import apply_overrides, preset

    spec = {"method": method, "seed": seed, "dataset": str(data), "steps": args.steps, "eval_episodes": args.eval_episodes,
            "model": {"language_encoder": args.language_encoder, "image_encoder": args.image_encoder, "image_tokens": args.image_tokens,
                      "frames": args.frames}, "device": args.device}
    prior = apply_overrides(preset("default"), METHODS[method]).trained_prior()
    return spec | ({"prior": prior} if prior != "none" else {})


def earlier_run(spec: dict, earlier: Optional[Path]) -> Optional[tuple[Path, int]]:
    """The run folder under `earlier`/runs and its step count that `spec` continues: the same settings but
    fewer steps, finished, with its last checkpoint's training state. None when there is none."""
    if earlier is None:
        return None
    name = f"{spec['method']}_seed{spec['seed']}"
    result_file, run_dir = earlier / "runs" / f"{name}.json", earlier / "runs" / name
    if not result_file.exists():
        return None
    from qtransformer.checkpoint import CheckpointError, last_checkpoint

    old = json.loads(result_file.read_text())["spec"]
    same = {k: v for k, v in old.items() if k != "steps"} == {k: v for k, v in spec.items() if k != "steps"}
    if not same or old["steps"] >= spec["steps"]:
        return None
    try:
        ckpt = last_checkpoint(run_dir)
    except CheckpointError:  # its training state was not kept: resuming would not make the same updates
        return None
    if ckpt is None or ckpt.name != f"step_{old['steps']:08d}":
        return None
    return run_dir, int(old["steps"])


def run_one(spec: dict, out: Path, threads: int = 0, earlier: Optional[Path] = None) -> dict:
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
    start = earlier_run(spec, earlier)
    if start is not None:  # a copy: the earlier run stays as it was
        shutil.copytree(start[0], run_dir)
    t0 = time.time()
    cfg = apply_overrides(preset("default"), {
        "dataset": spec["dataset"], "out": str(run_dir), "seed": spec["seed"], "steps": spec["steps"], "device": spec["device"],
        "eval_episodes": 0, "save_every": spec["steps"], "progress": False, "model": spec["model"], "threads": threads,
        "resume": start is not None,
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
    if start is not None:
        result["extended_from"] = {"run": str(start[0]), "steps": start[1]}
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
    args = apply_size(args)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    if args.extend_from is not None:
        if not (args.extend_from / "runs").is_dir():
            raise SystemExit(f"--extend-from {args.extend_from}: no runs/ folder there; give the --out of the earlier runs")
        if args.extend_from.resolve() == args.out.resolve():
            raise SystemExit("--extend-from is --out: give the longer runs their own --out (the earlier runs are copied, never changed)")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.no_train:
        results = [json.loads(p.read_text()) for p in sorted((args.out / "runs").glob("*_seed*.json"))]
    else:
        data = dataset(args)  # made once, before any run starts
        specs = [run_spec(args, data, m, s) for s in range(args.seeds) for m in args.methods]
        if args.jobs > 1 and len(specs) > 1:
            from qtransformer.workers import process_pool  # exits with this process (a killed run leaves no worker)

            with process_pool(min(args.jobs, len(specs))) as pool:
                n = len(specs)
                results = list(pool.map(run_one, specs, [args.out] * n, [args.threads] * n, [args.extend_from] * n))
        else:
            results = [run_one(spec, args.out, args.threads, args.extend_from) for spec in specs]
    summary = summarize(args, results)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    table = markdown(summary)
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    print(f"wrote {args.out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main(tyro.cli(Args))
