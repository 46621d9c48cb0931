"""The `qtransformer` command: make-dataset, import, export, train, eval, collect, finetune, info, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro

from .config import ConfigError, TrainConfig, apply_overrides, load_config_file, preset

COMMANDS = {
    "make-dataset": "Make a dataset: `builtin` (default), `metaworld`, or `ogbench` (OGBench's scripted oracles).",
    "train": "Train Q-Transformer on a dataset (presets, config files, resume).",
    "eval": "Evaluate a checkpoint's greedy policy: success rate over fixed seeds, written as JSON.",
    "collect": "Run a checkpoint's policy with exploration and append the episodes to a dataset.",
    "finetune": "Fine-tune a checkpoint online: act with exploration, append the episodes, keep training on offline + online data.",
    "info": "Summarise a dataset or a checkpoint.",
    "compact": "Rewrite a dataset's chunks (one per append) as one.",
    "import": "Import a D4RL, robomimic or Minari dataset into a dataset folder.",
    "export": "Export a dataset folder as a local Minari dataset.",
    "demo": "The end-to-end demo: make the built-in dataset, train, evaluate, print a table.",
}


@dataclass
class MakeDatasetArgs:
    """Make the built-in PointReach3D dataset: scripted demonstrations plus noisy autonomous episodes."""

    out: Path
    """Output dataset folder."""
    demos: int = 100
    """Demonstrations (scripted expert with small noise; they almost always succeed)."""
    autonomous: int = 400
    """Autonomous episodes (a biased, noisy policy; most fail)."""
    seed: int = 0
    """Seed for the environment and the scripted policies."""
    images: bool = False
    """Record the camera variant (32x32x3 images beside the state; env qtransformer/PointReach3DImage-v0)."""


@dataclass
class MetaWorldDatasetArgs:
    """Make a MetaWorld dataset: scripted-expert demonstrations plus autonomous episodes that mostly fail."""

    out: Path
    """Output dataset folder."""
    tasks: str = "mt10"
    """'mt10', or MetaWorld v3 task names separated by commas (reach-v3,push-v3)."""
    demos: int = 10
    """Demonstrations per task (the scripted expert with small action noise)."""
    autonomous: int = 40
    """Autonomous episodes per task."""
    autonomous_recipe: Literal["replay", "perturbed"] = "perturbed"
    """replay: a demonstration's actions replayed open-loop with noise, from its start (the paper's
    simulated recipe); perturbed: the expert with a per-episode perturbation (bias, wrong sub-goal,
    stalls, dropped grasp). Noise levels are tuned per task for 10-40 % success (docs/metaworld.md)."""
    paper_mix: bool = False
    """The paper's simulation mix: demonstrations are about 8 % of the episodes, the rest noisy replays
    (sets autonomous = round(demos * 92 / 8) and the replay recipe)."""
    seed: int = 0
    """Seed of the task variations, the episodes and the noise."""
    max_steps: int = 200
    """Time limit per episode (a timeout)."""
    workers: int = 1
    """Processes that make tasks in parallel (the dataset is the same for any number)."""
    camera: Optional[str] = None
    """Also record one camera's frame at every step (corner, corner2, corner3, corner4, topview,
    behindGripper, gripperPOV), rendered offscreen by MuJoCo: OSMesa on a CPU (slow: docs/metaworld.md),
    MUJOCO_GL=egl on a GPU machine. The episodes are the same as without; the env id records the camera."""
    image_size: int = 64
    """Width and height of the camera frames, in pixels (with --camera)."""
    render: Literal["full", "fast"] = "full"
    """How the frames are drawn (with --camera): full, MetaWorld's scene as shipped; fast, without shadows
    and multisampling, about 6x faster in MuJoCo's software renderer (a CPU machine). The env id records
    it, so evaluation and collection draw the same frames."""


@dataclass
class OGBenchDatasetArgs:
    """Make an OGBench manipulation dataset from the package's scripted oracles, as OGBench's published
    recipe does (1000 episodes x 1001 steps), relabelled for one single task (docs/ogbench.md)."""

    out: Path
    """Output dataset folder."""
    env: Literal["cube-single", "cube-double", "scene", "puzzle-3x3", "puzzle-4x4"] = "cube-single"
    """OGBench manipulation environment."""
    dataset: Literal["play", "noisy"] = "play"
    """play: the plan oracles (non-Markovian, smoothed plan noise); noisy: the Markov oracles with
    Gaussian action noise and random actions."""
    task: int = 1
    """Single task 1..5: reward 1 and a terminal at the step from a state that solves every subtask."""
    episodes: int = 1000
    """Raw episodes (each episode_length states, episode_length - 1 transitions)."""
    workers: int = 1
    """Processes that generate episodes (the dataset is the same for any number)."""
    seed: int = 0
    """Seed; raw episode i is seeded by (seed, i)."""
    episode_length: int = 1001
    """States per raw episode (OGBench: 1001, so 1000 transitions); shorter for quick tests."""
    cache: Optional[Path] = None
    """Folder of the raw-episode cache (task-independent, reused across tasks and re-runs); default
    $QTRANSFORMER_CACHE or ~/.cache/qtransformer, under ogbench/<env>-<dataset>-len<L>-seed<S>."""


@dataclass
class EvalArgs:
    """Evaluate a checkpoint's greedy policy over fixed seeds."""

    checkpoint: Path
    """A run folder, a checkpoint folder (checkpoints/step_N) or its model/ folder."""
    env: Optional[str] = None
    """Environment id; by default the one recorded with the model (which may not name a module to import: 'module:Env-v0' only here)."""
    episodes: int = 100
    """Number of episodes (seeds 10000000 + seed + i)."""
    seed: int = 0
    """Offset of the evaluation seeds."""
    out: Optional[Path] = None
    """Write the results (success_rate, episodes, per-episode outcomes) to this JSON file."""
    device: str = "cpu"
    """Device for the policy."""
    task: Optional[int] = None
    """Task id for a multi-task policy (found by name for metaworld:<task> ids; metaworld:mt10 runs every task)."""
    workers: int = 1
    """Worker processes that share the episodes (each loads the policy)."""
    video: Optional[Path] = None
    """Also save animated GIFs of the first --video-episodes episodes into this folder (offscreen rendering;
    MetaWorld uses MuJoCo's software renderer, OSMesa, unless MUJOCO_GL says otherwise; only videos need it)."""
    video_episodes: int = 2
    """How many episodes (per task) to record with --video."""
    support_tau: Optional[float] = None
    """Decode only among bins whose imitation probability is >= tau x the best bin's (policies trained with
    an imitation head, or with --prior-checkpoint; 0: the paper's plain greedy rule). Default: the training
    run's --algo.support-tau."""
    prior_weight: Optional[float] = None
    """Decode by Q + prior_weight x log p of the imitation head (policies trained with one; 0: the plain
    argmax; also turns off the prior a checkpoint carries). Default: the training run's: with the prior a
    run trained with --prior carries (or one given by --prior-checkpoint in its place), its --prior-weight
    (0.03 for the builtin preset, else 0.01); with --prior-checkpoint on a run without a prior, 0.01; with an
    imitation head, --algo.prior-weight."""
    prior_checkpoint: Optional[Path] = None
    """A BC run on the same data (--algo.method bc) whose probabilities --prior-weight and --support-tau read
    instead of an imitation head: Q-Transformer's values decoded toward what that run does where they barely
    differ. Train it on the best behaviour (--source-mix demonstration 1.0): a BC run on data that is mostly
    failures pulls the policy down (docs/algorithm.md, docs/benchmarks.md). Default: the prior the checkpoint
    carries (runs trained with --prior, as the default preset does on data with demonstrations), if any."""
    instruction: Optional[str] = None
    """The instruction a language-conditioned policy acts on (any text; one not seen in training is embedded
    by the checkpoint's encoder). Default: the training instruction of the task (by --task or the env's name)."""


@dataclass
class CollectArgs:
    """Run a checkpoint's policy with exploration in an environment and append the episodes (as 'autonomous')."""

    checkpoint: Path
    """A run folder, a checkpoint folder or its model/ folder."""
    into: Path
    """The dataset to append to (created when it does not exist)."""
    episodes: int = 20
    """Number of episodes to collect."""
    env: Optional[str] = None
    """Environment id; by default the one recorded with the model."""
    epsilon: float = 0.1
    """Per action dimension, the probability of a uniformly random bin instead of the greedy one."""
    temperature: float = 0.0
    """Sample each dimension's bin from softmax(values / temperature) instead of the argmax (0: greedy)."""
    task: Optional[int] = None
    """Task id, for a multi-task policy."""
    seed: int = 0
    """Seed of the episodes (20000000 + seed + i) and of the exploration."""
    source: str = "autonomous"
    """Source label of the new episodes."""
    instruction: Optional[str] = None
    """The instruction a language-conditioned policy acts on, recorded with the episodes (default: the task's)."""
    prior_checkpoint: Optional[Path] = None
    """A BC run on the same data whose probabilities weigh the greedy choice (Q + 0.01 log p), as `eval
    --prior-checkpoint` (default: the prior the checkpoint carries, if any); exploration (--epsilon,
    --temperature) applies on top."""


@dataclass
class InfoArgs:
    """Summarise a dataset folder or a checkpoint."""

    path: tyro.conf.Positional[Path]
    """A dataset folder, a run folder, a checkpoint folder or a model/ folder."""


@dataclass
class DemoArgs:
    """Make the built-in dataset, train on it, evaluate, and print the learned policy beside the data."""

    out: Path = Path("runs/demo")
    """Folder for the dataset, the run and results.json."""
    preset: str = "builtin"
    """Training preset (builtin: sized for this task; smoke: a seconds-long check that all runs)."""
    demos: int = 100
    """Demonstrations in the dataset."""
    autonomous: int = 400
    """Autonomous episodes in the dataset."""
    eval_episodes: int = 200
    """Evaluation episodes for each row of the table."""
    seed: int = 0
    """Seed for data and training."""


@dataclass
class ImportArgs:
    """Import a D4RL (.npz/.hdf5), robomimic (.hdf5) or Minari (dataset id) dataset; see docs/dataset_format.md."""

    path: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="SOURCE")]
    """A D4RL .npz/.hdf5/.h5 file, a robomimic .hdf5 file, or a Minari dataset id (under MINARI_DATASETS_PATH)."""
    format: Literal["d4rl", "robomimic", "minari"]
    """Format of SOURCE."""
    out: Path
    """Output dataset folder."""
    env_id: Optional[str] = None
    """Gymnasium id recorded for evaluation (Minari: by default the dataset's env spec)."""
    source: Optional[str] = None
    """Episode source label (default: demonstration for robomimic, d4rl / minari otherwise)."""
    images: bool = True
    """Import uint8 (H, W, C) image observations (robomimic, Minari); --no-images skips them, keeping the state only."""


@dataclass
class ExportArgs:
    """Export a dataset folder as a local Minari dataset (under MINARI_DATASETS_PATH); see docs/dataset_format.md."""

    path: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DATASET")]
    """The dataset folder to export."""
    format: Literal["minari"]
    """Output format."""
    dataset_id: str
    """Id of the new Minari dataset, (namespace/)name-v<version>; it must not exist yet."""
    env_id: Optional[str] = None
    """Gymnasium id recorded in the Minari metadata (default: the dataset's env_id)."""


def parse_train_args(argv: list[str]) -> TrainConfig:
    """Preset, then config file, then flags: each later source overrides the earlier ones."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="default")
    pre.add_argument("--config", type=Path, default=None)
    known, _ = pre.parse_known_args(argv)
    base = preset(known.preset)
    if known.config is not None:
        from_file = load_config_file(known.config)
        base = apply_overrides(base, from_file, str(known.config))
        given = any(a.split("=")[0] in ("--eval-env", "--eval_env") for a in argv)
        if from_file.get("eval_env") is not None and not given:  # an id from a file must not import a module
            from .envs import env_id_from_file

            env_id_from_file(from_file["eval_env"], known.config, "eval_env", "--eval-env", ConfigError)
    return tyro.cli(TrainConfig, args=argv, default=base, prog="qtransformer train")


def cmd_make_dataset(argv: list[str]) -> None:
    if argv and argv[0] == "metaworld":
        return cmd_make_metaworld(argv[1:])
    if argv and argv[0] == "ogbench":
        return cmd_make_ogbench(argv[1:])
    if argv and argv[0] == "builtin":
        argv = argv[1:]
    args = tyro.cli(MakeDatasetArgs, args=argv, prog="qtransformer make-dataset builtin")
    from .data.store import EpisodeStore, check_can_write
    from .envs.builtin_dataset import make_builtin_dataset

    check_can_write(args.out)  # now, not after the episodes were made

    ds = make_builtin_dataset(args.demos, args.autonomous, seed=args.seed, images=args.images)
    EpisodeStore.create(args.out, ds)
    print(f"wrote {args.out}: {ds.num_episodes} episodes, {ds.num_steps} steps")
    print(dataset_table(ds))


def cmd_make_metaworld(argv: list[str]) -> None:
    args = tyro.cli(MetaWorldDatasetArgs, args=argv, prog="qtransformer make-dataset metaworld")
    from .data import EpisodeStore
    from .data.store import check_can_write
    from .envs.metaworld import check_camera, tasks_from_env_id
    from .envs.metaworld_dataset import make_metaworld_dataset, paper_mix_autonomous

    check_can_write(args.out)  # now, not after the episodes were made
    try:
        check_camera(args.camera, args.image_size, args.render)
    except ValueError as exc:
        raise ValueError(f"--camera / --image-size / --render: {exc}") from None

    tasks = tasks_from_env_id(f"metaworld:{args.tasks}")
    autonomous, recipe = args.autonomous, args.autonomous_recipe
    if args.paper_mix:
        autonomous, recipe = paper_mix_autonomous(args.demos), "replay"
    ds = make_metaworld_dataset(tasks, args.demos, autonomous, recipe=recipe, seed=args.seed, max_steps=args.max_steps, workers=args.workers,
                                camera=args.camera, image_size=args.image_size, render=args.render)
    store = EpisodeStore.create(args.out, ds)
    print(f"wrote {args.out}: {store.num_episodes} episodes, {store.num_steps} steps, env {store.env_id}")
    print(task_source_table(store))


def cmd_make_ogbench(argv: list[str]) -> None:
    args = tyro.cli(OGBenchDatasetArgs, args=argv, prog="qtransformer make-dataset ogbench")
    from .envs.ogbench_dataset import make_ogbench_dataset, summary_table

    s = make_ogbench_dataset(args.env, args.dataset, args.task, args.episodes, args.out, seed=args.seed, workers=args.workers,
                             episode_length=args.episode_length, cache=args.cache)
    print(f"wrote {args.out}: {s['stored_episodes']} episodes, {s['transitions']} steps, env {s['env_id']} (raw episodes cached in {s['cache']})")
    print(summary_table(s))


def task_source_table(store) -> str:
    """Episodes and success rate per task and source."""
    sources, tasks, success = store.episode_table()
    lines = ["| task | source | episodes | success rate |", "|---|---|---|---|"]
    for t, name in enumerate(store.task_names):
        for s in sorted(set(sources.tolist())):
            sel = (tasks == t) & (sources == s)
            if sel.any():
                lines.append(f"| {name} | {s} | {int(sel.sum())} | {success[sel].mean():.3f} |")
    return "\n".join(lines)


def dataset_table(ds, by: str = "source") -> str:
    """Episodes and success rate by source (or by task, for an EpisodeStore) as a Markdown table."""
    rows = ds.success_by_source() if by == "source" else ds.success_by("task")
    lines = [f"| {by} | episodes | success rate |", "|---|---|---|"]
    for label, (n, rate) in rows.items():
        lines.append(f"| {label} | {n} | {rate:.3f} |")
    return "\n".join(lines)


def cmd_import(argv: list[str]) -> None:
    args = tyro.cli(ImportArgs, args=argv, prog="qtransformer import")
    from .data.importers import import_dataset
    from .data.store import check_can_write

    check_can_write(args.out)  # now, not after the source was read

    result = import_dataset(args.path, args.format, args.out, env_id=args.env_id, source_label=args.source, images=args.images)
    ds = result.dataset
    print(f"wrote {args.out}: {ds.num_episodes} episodes, {ds.num_steps} steps (from {args.format} {args.path}), env {ds.env_id}")
    cams = "".join(f", camera '{k}' {shape} uint8" for k, shape in ds.image_shapes.items())
    print(f"observations ({ds.obs_dim},){cams}, actions ({ds.action_dim},) in [{ds.action_low.tolist()}, {ds.action_high.tolist()}]")
    for note in result.notes:
        print(f"note: {note}")
    print(dataset_table(ds))


def cmd_export(argv: list[str]) -> None:
    args = tyro.cli(ExportArgs, args=argv, prog="qtransformer export")
    from .data.exporters import export_minari

    notes: list[str] = []
    out = export_minari(args.path, args.dataset_id, env_id=args.env_id, notes=notes)
    from .data import EpisodeStore

    store = EpisodeStore.open(args.path)
    print(f"wrote minari dataset '{args.dataset_id}' at {out}: {store.num_episodes} episodes, {store.num_steps} steps "
          f"(from {args.path}), env {args.env_id or store.env_id}")
    for note in notes:
        print(f"note: {note}")


def cmd_train(argv: list[str]) -> None:
    from .distributed import from_env
    from .train import train

    cfg = parse_train_args(argv)
    final = train(cfg)
    if from_env().is_main:  # under torchrun: once, not once per process
        print(f"final checkpoint: {final}")


def cmd_eval(argv: list[str]) -> None:
    args = tyro.cli(EvalArgs, args=argv, prog="qtransformer eval")
    from .evaluate import evaluate_policy
    from .fileio import check_output_dir, check_output_file
    from .policy import QTPolicy

    if args.out is not None:  # now, not after the whole evaluation ran
        check_output_file(args.out, "--out")
    if args.video is not None:
        check_output_dir(args.video, "--video")

    policy = QTPolicy.from_checkpoint(
        args.checkpoint, device=args.device, support_tau=args.support_tau, prior_weight=args.prior_weight, prior_checkpoint=args.prior_checkpoint
    )
    result = evaluate_policy(
        policy, args.env, args.episodes, seed=args.seed, progress=True, task=args.task, workers=args.workers, instruction=args.instruction
    )
    result["checkpoint"] = str(args.checkpoint)
    result["decoding"] = {"support_tau": policy.support_tau, "prior_weight": policy.prior_weight}
    if policy.prior is not None:
        result["decoding"]["prior_checkpoint"] = str(args.prior_checkpoint or policy.prior.model_dir)
    for name, r in result.get("per_task", {}).items():
        print(f"  {name}: success rate {r['success_rate']:.3f} over {r['episodes']} episodes")
    print(f"{result['env_id']}: success rate {result['success_rate']:.3f} over {result['episodes']} episodes")
    if args.video is not None:
        from .evaluate import record_videos

        paths = record_videos(
            policy, result["env_id"], args.video, args.video_episodes, seed=args.seed, task=args.task, instruction=args.instruction
        )
        result["videos"] = [str(p) for p in paths]
        print(f"wrote {len(paths)} videos to {args.video}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")


def cmd_collect(argv: list[str]) -> None:
    args = tyro.cli(CollectArgs, args=argv, prog="qtransformer collect")
    from .collect import check_can_append, collect
    from .policy import QTPolicy

    check_can_append(args.into)  # now, not after the episodes were run

    policy = QTPolicy.from_checkpoint(args.checkpoint, prior_checkpoint=args.prior_checkpoint)
    result = collect(policy, args.into, args.episodes, env_id=args.env, epsilon=args.epsilon, temperature=args.temperature,
                     seed=args.seed, task=args.task, source=args.source, instruction=args.instruction)
    print(f"appended {result['episodes']} episodes ({result['steps']} steps, success rate {result['success_rate']:.3f}) "
          f"to {args.into}, which now holds {result['dataset_episodes']} episodes")


@dataclass
class CompactArgs:
    """Rewrite a dataset's chunks as one (each append adds a chunk, and every chunk costs open files when the dataset is read)."""

    path: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DATASET")]
    """The dataset folder."""


def cmd_compact(argv: list[str]) -> None:
    args = tyro.cli(CompactArgs, args=argv, prog="qtransformer compact")
    import json as _json

    from .data import compact_dataset

    meta = args.path / "meta.json"
    if not meta.exists():
        from .data import DatasetError

        raise DatasetError(f"{meta}: missing; pass a dataset folder (it holds meta.json and chunks/)")
    before = len(_json.loads(meta.read_text()).get("chunks", []))
    store = compact_dataset(args.path)
    print(f"compacted {args.path}: {before} chunks -> {len(store.chunks)}, {store.num_episodes} episodes, {store.num_steps} steps")


def cmd_finetune(argv: list[str]) -> None:
    from .finetune import FinetuneConfig, finetune

    cfg = tyro.cli(FinetuneConfig, args=argv, prog="qtransformer finetune")
    final = finetune(cfg)
    print(f"final checkpoint: {final}")


def cmd_info(argv: list[str]) -> None:
    args = tyro.cli(InfoArgs, args=argv, prog="qtransformer info")
    path = args.path
    if (path / "meta.json").exists():
        from .data import EpisodeStore

        store = EpisodeStore.open(path)
        print(f"dataset {path}: {store.num_episodes} episodes, {store.num_steps} steps in {len(store.chunks)} chunk(s), "
              f"{store.size_on_disk() / 2**20:.1f} MiB on disk, env {store.env_id}")
        cams = "".join(f", camera '{k}' {shape} uint8" for k, shape in store.image_shapes.items())
        print(f"observations: state ({store.obs_dim},) float32{cams}; actions ({store.action_dim},) in [{store.action_low.tolist()}, {store.action_high.tolist()}]")
        print(dataset_table(store))
        print()
        print(dataset_table(store, by="task"))
        return
    from .checkpoint import load_model, resolve_model_dir

    model_dir = resolve_model_dir(path)
    net, disc, meta = load_model(model_dir)
    n_params = sum(p.numel() for p in net.parameters())
    print(f"model {model_dir}: {n_params:,} parameters, env {meta.get('env_id')}")
    print(f"observations ({net.obs_dim},), actions ({net.action_dim},) x {disc.num_bins} bins, tasks: {meta.get('task_names')}")
    processor = meta.get("processor") or {}
    if processor.get("language_encoder", "none") != "none":
        print(f"language encoder {processor['language_encoder']} ({processor['language_dim']}-d), trained instructions: {processor['instructions']}")
    print(json.dumps(meta["model"]))


def cmd_demo(argv: list[str]) -> None:
    args = tyro.cli(DemoArgs, args=argv, prog="qtransformer demo")
    from .demo import run_demo

    run_demo(args)


def print_help() -> None:
    print("usage: qtransformer COMMAND [flags]   (qtransformer COMMAND --help for its flags)\n")
    print("Q-Transformer: offline RL with an autoregressive per-dimension Q-function on a Transformer.\n")
    print("commands:")
    for name, text in COMMANDS.items():
        print(f"  {name:<14}{text}")


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help()
        return 0
    command, rest = argv[0], argv[1:]
    handlers = {"make-dataset": cmd_make_dataset, "train": cmd_train, "eval": cmd_eval, "info": cmd_info, "demo": cmd_demo, "import": cmd_import, "export": cmd_export, "collect": cmd_collect, "finetune": cmd_finetune, "compact": cmd_compact}
    if command not in handlers:
        print(f"qtransformer: unknown command '{command}'\n", file=sys.stderr)
        print_help()
        return 2
    from .checkpoint import CheckpointError
    from .data import DatasetError
    from .distributed import is_collective_failure, rank_label

    def error(text: str, code: int) -> int:  # under torchrun the message names the rank: 'rank 1: ...'
        print(f"qtransformer {command}: error: {rank_label()}{' '.join(str(text).split())}", file=sys.stderr, flush=True)  # one line
        return code

    try:
        handlers[command](rest)
    except (ConfigError, DatasetError, CheckpointError, ValueError) as exc:  # user errors: one line, no traceback
        return error(str(exc), 2)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a file or folder that cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        return error(f"{where}{exc.strerror or exc}; check that the path exists, is of the right kind (file or folder) "
                     "and that you may read and write it, and that the disk has space", 2)
    except Exception as exc:  # noqa: BLE001 - anything else is a bug: one line, the traceback on request
        if os.environ.get("QTRANSFORMER_TRACEBACK"):
            raise
        if rank_label() and is_collective_failure(exc):  # under torchrun: another process failed first
            return error(f"a collective operation with the other processes failed ({type(exc).__name__}: {exc}); another "
                         "process failed or stopped responding (its message is above), or --dist-timeout-s passed", 1)
        return error(f"unexpected {type(exc).__name__}: {exc} (a bug in qtransformer: please report it with the command line; "
                     "set QTRANSFORMER_TRACEBACK=1 to see the traceback)", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
