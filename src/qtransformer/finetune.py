"""Online fine-tuning from an offline checkpoint: act, record, append, update, evaluate, checkpoint, resume.

`finetune(cfg)` is one loop over rounds. In each round:

1. the N environments step once, side by side, with the current policy (one batched call; epsilon-greedy
   over bins, epsilon annealed linearly from epsilon_start to epsilon_end);
2. every episode that ended is appended to the online dataset at once (an atomic append: an episode
   that finished is never lost), and the online transitions are rebuilt over all finished episodes;
   an episode still running is in no batch, no TD target and no Monte-Carlo return;
3. the learner makes `updates_per_step` updates per environment step on batches that mix offline and
   online transitions (data/sampler.py `MixedSampler`);
4. evaluation and checkpoints at multiples of their environment-step intervals.

Everything counts in environment steps (the x axis of metrics.jsonl). The start is a checkpoint of
`qtransformer train`: its online and target networks, observation normaliser, action bins and learning
rule; the optimizer is restored with it (`optimizer='restore'`) or starts fresh, with its warm-up
(`'fresh'`). `from_scratch` keeps only the architecture, bins and normaliser and starts the networks
anew: the online-from-scratch baseline. The start's batch rules (`source_mix`, `only_successful`,
`negative_rate`) do not carry over: offline rows are uniform over the offline dataset, and the run says so.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from tqdm import tqdm

from .algo import QTransformerLearner
from .checkpoint import (
    PRIOR_DIR,
    CheckpointError,
    load_learner_state,
    load_model,
    load_training_state,
    read_training_state_json,
    resolve_model_dir,
    save_checkpoint,
)
from .config import ConfigError, TrainConfig, apply_overrides, model_from_dict, to_dict
from .data import DatasetError, EpisodeDataset, EpisodeStore, append_episodes, build_transitions, compact_dataset
from .data.sampler import MixedSampler, imitation_mask
from .data.store import check_can_write
from .envs import env_id_from_file, is_multi_task
from .envs.rollout import EpisodeRecorder
from .evaluate import evaluate_policy, stack_observations
from .fileio import atomic_write_text
from .logging import MetricLogger
from .nets import QTransformerNet
from .policy import QTPolicy, carried_prior_weight
from .processor import episode_instructions
from .train import _differences, init_value_head, pick_device, resume_checkpoint, seed_everything

# Fine-tuning episodes reset with seeds from here: apart from the built-in generator's, evaluation's
# (10_000_000) and collection's (20_000_000). Run seed s, episode k: FINETUNE_SEED_OFFSET + 1_000_000 s + k.
FINETUNE_SEED_OFFSET = 30_000_000
ONLINE_SOURCE = "online"
COMPACT_EVERY = 50  # appends (one chunk each) between compactions of the online dataset


@dataclass
class FinetuneConfig:
    """Fine-tune a trained checkpoint online: act in the environment, append the episodes, keep training."""

    checkpoint: Path
    """Start: a run folder of `qtransformer train`, a checkpoint folder (checkpoints/step_N), or a model/ folder
    (then the optimizer starts fresh and the target network from the model's weights)."""
    env_steps: int = 50_000
    """Environment steps to collect in all (over every environment); may be raised with --resume."""
    out: Path = Path("runs/finetune")
    """Run folder: config.json, metrics.jsonl (x axis: environment steps), checkpoints/, eval_info.json."""
    env: Optional[str] = None
    """Environment id; by default the one recorded with the checkpoint (one task: a single MetaWorld task, an OGBench task)."""
    dataset: Optional[Path] = None
    """Offline dataset mixed into every batch; by default the one the checkpoint was trained on."""
    offline: bool = True
    """Mix offline data into the batches (--no-offline: online data only)."""
    into: Optional[Path] = None
    """Dataset the online episodes are appended to (source 'online'); default OUT/online. Episodes it holds
    already join the online data. Must not be the offline dataset."""
    num_envs: int = 4
    """Environments stepped side by side (one batched policy call per round)."""
    updates_per_step: float = 1.0
    """Gradient updates per environment step (the update-to-data ratio); fractions accumulate."""
    online_fraction: float = 0.5
    """Share of each batch drawn from the online episodes (RLPD: 0.5); the rest offline. Until the first
    online episode ends, batches are all offline."""
    epsilon_start: float = 0.1
    """Exploration at the start: each action dimension takes a uniform bin with this probability."""
    epsilon_end: float = 0.02
    """Exploration after the anneal."""
    epsilon_anneal_steps: Optional[int] = None
    """Environment steps over which epsilon falls linearly from start to end (default: half of --env-steps)."""
    temperature: float = 0.0
    """Sample each dimension's bin from softmax(values / temperature) before epsilon (0: greedy)."""
    optimizer: Literal["restore", "fresh"] = "restore"
    """'restore': AdamW's moments and update count from the checkpoint; 'fresh': a new AdamW from update 0
    (with its learning-rate warm-up)."""
    lr: Optional[float] = None
    """Learning rate (default: the checkpoint's)."""
    batch_size: Optional[int] = None
    """Transitions per update (default: the checkpoint's)."""
    from_scratch: bool = False
    """Start the networks anew (the checkpoint's architecture, bins, learning rule and normaliser only):
    the online-from-scratch baseline; combine with --no-offline for pure online RL."""
    task: Optional[int] = None
    """Task id for a multi-task policy (found by name for metaworld:<task> ids)."""
    instruction: Optional[str] = None
    """Instruction a language-conditioned policy acts on (one of its training instructions)."""
    eval_every: int = 5000
    """Evaluate greedily every this many environment steps (and at step 0: the offline policy, and at the end)."""
    eval_episodes: int = 50
    """Episodes per evaluation (the fixed evaluation seeds of `qtransformer eval`; 0: no evaluation)."""
    save_every: int = 5000
    """Write a checkpoint every this many environment steps (and at the end)."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep (the newest); 0 keeps them all."""
    log_every: int = 1000
    """Write averaged training and collection metrics every this many environment steps."""
    seed: int = 0
    """Seed of the episodes' resets, the exploration and the batches."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint (collection and training where they stopped)."""
    device: str = "auto"
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda', ..."""
    threads: int = 0
    """CPU threads of this process (0: PyTorch's default)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, msg: str) -> None:
            if not ok:
                raise ConfigError(f"{name}: {msg}")

        for name in ("env_steps", "num_envs", "save_every", "log_every"):
            check(getattr(self, name) >= 1, name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("eval_every", "eval_episodes", "keep_checkpoints", "threads"):
            check(getattr(self, name) >= 0, name, f"must be >= 0 (0 turns it off), got {getattr(self, name)}")
        check(math.isfinite(self.updates_per_step) and self.updates_per_step >= 0, "updates_per_step", f"must be >= 0, got {self.updates_per_step}")
        check(0.0 <= self.online_fraction <= 1.0, "online_fraction", f"must be in [0, 1], got {self.online_fraction}")
        for name in ("epsilon_start", "epsilon_end"):
            check(0.0 <= getattr(self, name) <= 1.0, name, f"must be in [0, 1], got {getattr(self, name)}")
        check(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        check(self.epsilon_anneal_steps is None or self.epsilon_anneal_steps >= 0, "epsilon_anneal_steps", "must be >= 0")
        check(self.lr is None or self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.batch_size is None or self.batch_size >= 1, "batch_size", f"must be at least 1, got {self.batch_size}")

    def epsilon(self, env_step: int) -> float:
        """Linear anneal from epsilon_start (step 0) to epsilon_end (at epsilon_anneal_steps and after)."""
        span = self.env_steps // 2 if self.epsilon_anneal_steps is None else self.epsilon_anneal_steps
        frac = 1.0 if span <= 0 else min(1.0, env_step / span)
        return self.epsilon_start + frac * (self.epsilon_end - self.epsilon_start)


# Settings a resumed fine-tuning run must repeat (the others, env_steps and the intervals, may change).
FROZEN_ON_RESUME = ("env", "dataset", "offline", "into", "num_envs", "updates_per_step", "online_fraction", "epsilon_start",
                    "epsilon_end", "epsilon_anneal_steps", "temperature", "optimizer", "lr", "batch_size", "from_scratch", "task",
                    "instruction", "seed")


def _start_point(path: Path) -> tuple[Optional[Path], Path, Optional[str]]:
    """(the checkpoint folder with training_state/, or None where only the model was kept: a bare model/
    folder, or a run whose last checkpoint had its training state pruned, as bench.regime prunes it; the
    model folder; the offline dataset recorded by the training run that holds the model, or None)."""
    path = Path(path)
    if (path / "checkpoints" / "last").exists():
        path = resolve_model_dir(path).parent  # the step_N that checkpoints/last names; its model is all a start needs
    elif path.name == "model" and (path.parent / "training_state" / "state.json").exists():
        path = path.parent
    model_dir = resolve_model_dir(path)
    ckpt = path if (path / "training_state" / "state.json").exists() else None
    return ckpt, model_dir, _recorded_dataset(model_dir)


def training_run_config(model_dir: Path) -> Optional[Path]:
    """RUN/config.json of the `train` run that holds model_dir (RUN/checkpoints/step_N/model), or None."""
    config = model_dir.parent.parent.parent / "config.json"
    return config if model_dir.parent.parent.name == "checkpoints" and config.exists() else None


def _recorded_dataset(model_dir: Path) -> Optional[str]:
    """The dataset named in the config.json of the training run holding model_dir."""
    config = training_run_config(model_dir)
    if config is None:
        return None
    try:
        dataset = json.loads(config.read_text()).get("dataset")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return dataset if isinstance(dataset, str) else None


def _train_config(state: Optional[dict], meta: dict, where: Path) -> TrainConfig:
    """The offline run's TrainConfig (state.json), or for a bare model the defaults with its learning rule."""
    try:
        if state is not None:
            return apply_overrides(TrainConfig(), state["train_config"], f"{where}: train_config")
        return apply_overrides(TrainConfig(), {"algo": meta.get("algo") or {}, "model": meta["model"]}, f"{where}: algo")
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{where}: cannot read the training settings ({exc!r}); the checkpoint is incomplete") from exc


def _fresh_like(net: QTransformerNet, meta: dict, seed: int) -> QTransformerNet:
    """A newly initialised network of `net`'s shape (config.json `meta`; seeded), keeping its buffers (the
    observation normaliser, a language table)."""
    torch.manual_seed(seed)
    image_shapes = {k: tuple(v) for k, v in meta.get("image_shapes", {}).items()}
    fresh = QTransformerNet(
        net.obs_dim, net.action_dim, net.num_bins, net.num_tasks, model_from_dict(meta["model"]), image_shapes,
        imitation_head=net.imitation_head is not None, language_dim=net.language_dim, num_instructions=net.num_instructions,
    )
    fresh.load_state_dict({**fresh.state_dict(), **dict(net.named_buffers())})
    return fresh


class _Transitions:
    """Builds the learner's transitions of a dataset for this policy: its bins, discount, n-step, imitation
    mask and (for a language policy) the index of each step's instruction in the network's table."""

    def __init__(self, policy: QTPolicy, train_cfg: TrainConfig, with_imitation: bool):
        self.policy, self.algo, self.with_imitation = policy, train_cfg.algo, with_imitation

    def __call__(self, data, where: str) -> dict:
        transitions = build_transitions(data, self.policy.discretizer, self.algo.gamma, self.algo.n_step)
        if self.policy.processor.uses_language:
            known = {text: i for i, text in enumerate(self.policy.processor.instructions)}
            texts = episode_instructions(data)
            unknown = sorted(set(texts) - set(known))
            if unknown:
                raise DatasetError(f"{where}: instructions {unknown[:3]} are not among the policy's training instructions "
                                   f"{list(known)[:5]}; fine-tuning keeps the network's instruction table: use one of those")
            lengths = np.concatenate([np.diff(c.episode_starts) for c in getattr(data, "chunks", [data])])
            transitions["task"] = np.repeat(np.asarray([known[t] for t in texts], dtype=np.int64), lengths)
        if self.with_imitation:
            try:
                transitions["imitate"] = imitation_mask(transitions, self.algo.imitation_source)
            except ValueError:  # e.g. 'demonstration' on online data: those steps teach the imitation head nothing
                transitions["imitate"] = np.zeros(len(transitions["next_index"]), np.float32)
        return transitions


@dataclass
class _OnlineData:
    """The finished online episodes as a list of in-memory parts (what build_transitions reads as chunks):
    appending a part copies nothing; every MERGE_PARTS parts are merged into one, so sampling gathers from few."""

    chunks: list
    task_names: list

    MERGE_PARTS = 32

    def add(self, part: EpisodeDataset) -> None:
        self.chunks.append(part)
        if len(self.chunks) > self.MERGE_PARTS:
            self.chunks = [EpisodeDataset.concatenate(self.chunks)]

    @property
    def num_episodes(self) -> int:
        return sum(c.num_episodes for c in self.chunks)

    @property
    def num_steps(self) -> int:
        return sum(c.num_steps for c in self.chunks)


def _check_fits(store, policy: QTPolicy, where: str) -> None:
    net = policy.net
    cameras = {k: tuple(v) for k, v in policy.meta.get("image_shapes", {}).items()}
    if store.obs_dim != net.obs_dim or store.action_dim != net.action_dim or dict(store.image_shapes) != cameras:
        raise DatasetError(f"{where}: observations ({store.obs_dim},), actions ({store.action_dim},) and cameras {store.image_shapes} "
                           f"do not fit the checkpoint's ({net.obs_dim},), ({net.action_dim},) and {cameras}; pass the dataset it was trained on")


def finetune(cfg: FinetuneConfig) -> Path:
    """Fine-tune per `cfg`; return the final checkpoint folder."""
    threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        return _finetune(cfg, pick_device(cfg.device))
    finally:
        torch.set_num_threads(threads)


def _finetune(cfg: FinetuneConfig, device: torch.device) -> Path:
    run_dir = Path(cfg.out)
    own = resume_checkpoint(run_dir, cfg.resume)
    if own is not None:
        saved = read_training_state_json(own).get("finetune")
        if saved is None:
            raise ConfigError(f"{own}: not a fine-tuning checkpoint (made by `qtransformer train`); resume it with `train --resume`")
        now = to_dict(cfg)
        diffs = [d for key in FROZEN_ON_RESUME for d in _differences(saved["config"].get(key), now.get(key), f"{key}.")]
        if diffs:
            raise ConfigError(f"{own}: cannot resume with different settings: {'; '.join(diffs)}; repeat the original flags "
                              f"(config.json in {run_dir}) or fine-tune into a new --out folder")

    # -- the start: networks, bins, learning rule -------------------------------------------------------
    start_ckpt, model_dir, run_dataset = _start_point(own if own is not None else cfg.checkpoint)
    net, discretizer, meta = load_model(model_dir, device="cpu")
    state = read_training_state_json(start_ckpt) if start_ckpt is not None else None
    train_cfg = _train_config(state, meta, model_dir)
    if train_cfg.algo.method != "qtransformer":
        raise ConfigError(f"{model_dir}: a '{train_cfg.algo.method}' checkpoint; fine-tuning runs Q-Transformer's updates: fine-tune a Q-Transformer checkpoint")
    overrides = {k: v for k, v in (("batch_size", cfg.batch_size), ("algo", {"lr": cfg.lr} if cfg.lr else None)) if v is not None}
    train_cfg = apply_overrides(train_cfg, overrides, "fine-tuning flags")
    env_id = cfg.env or env_id_from_file(meta.get("env_id"), model_dir / "config.json", error=ConfigError)  # never one that imports a module
    if not env_id:
        raise ConfigError(f"{model_dir}: the checkpoint records no environment; pass --env")
    if is_multi_task(env_id):
        raise ConfigError(f"--env {env_id}: fine-tune on one task at a time (for example metaworld:door-open-v3)")

    seed_everything(cfg.seed)
    if cfg.from_scratch:
        net = _fresh_like(net, meta, cfg.seed)
    policy = QTPolicy(net, discretizer, meta, device)  # to resolve task ids and instructions first
    if policy.action_chunk > 1:
        raise ConfigError(f"{model_dir}: a policy with action chunks of {policy.action_chunk} steps (--algo.action-chunk); "
                          "fine-tuning records single steps, so it takes policies trained with --algo.action-chunk 1")
    instruction = policy.instruction_for_env(env_id, cfg.task, cfg.instruction)
    task_input = policy.task_for_env(env_id, cfg.task)
    task_names = list(meta.get("task_names") or ["default"])
    name = policy.env_task_name(env_id)
    task_id = int(task_input) if task_input is not None else (int(cfg.task) if cfg.task is not None else (task_names.index(name) if name in task_names else 0))

    # -- data ---------------------------------------------------------------------------------------------
    with_imitation = net.imitation_head is not None
    make_transitions = _Transitions(policy, train_cfg, with_imitation)
    offline_path = None
    offline = None
    if cfg.offline:
        offline_path = cfg.dataset or (state or {}).get("dataset") or run_dataset
        if offline_path is None:
            raise ConfigError(f"{model_dir}: no offline dataset recorded with this checkpoint; pass --dataset DIR or --no-offline")
        if offline_path == run_dataset and not Path(run_dataset).is_absolute() and not Path(run_dataset).is_dir():
            raise ConfigError(f"{training_run_config(model_dir)}: field 'dataset' is {run_dataset!r}, relative to where "
                              "`train` ran and not found from here; pass --dataset DIR (or run from that folder)")
        store = EpisodeStore.open(offline_path)
        _check_fits(store, policy, str(offline_path))
        offline = make_transitions(store, str(offline_path))
    into = Path(cfg.into) if cfg.into is not None else run_dir / "online"
    if offline_path is not None and into.resolve() == Path(offline_path).resolve():
        raise ConfigError(f"--into {into}: is the offline dataset; online episodes go to a dataset of their own (the default OUT/online)")
    check_can_write(into, "--into", append=True)
    online_data: Optional[_OnlineData] = None
    if (into / "meta.json").exists():
        existing = compact_dataset(into)  # it may hold many chunks (an earlier run's appends): one, before it is read
        _check_fits(existing, policy, str(into))
        online_data = _OnlineData([existing.to_dataset()], existing.task_names)
    if cfg.from_scratch and train_cfg.algo.head_init == "data_mean":
        source = offline if offline is not None else (make_transitions(online_data, str(into)) if online_data is not None else None)
        if source is not None:
            init_value_head(net, float(np.mean(source["mc_return"])), train_cfg.algo.hl_gauss_sigma)

    prior_dir = model_dir / PRIOR_DIR  # a start trained with --prior: the fine-tuned policy decodes with the same prior
    with_prior = (prior_dir / "config.json").exists() and not cfg.from_scratch  # from scratch: nothing learned offline
    prior = QTPolicy.from_checkpoint(prior_dir, device=str(device)) if with_prior else None
    in_targets = prior is not None and train_cfg.algo.prior_in_targets  # and its targets take the prior's choice, as offline
    learner = QTransformerLearner(net, train_cfg.algo, device, amp_bf16=train_cfg.amp_bf16,
                                  prior_net=prior.net if in_targets else None, prior_weight=carried_prior_weight(meta))
    sampler = MixedSampler(offline, train_cfg.batch_size, device, cfg.seed, cfg.online_fraction, frames=policy.frames)
    if online_data is not None:
        sampler.set_online(make_transitions(online_data, str(into)))
    progress_state = {"env_steps": 0, "episodes_started": 0, "online_episodes": 0, "updates_due": 0.0, "updates": 0}
    if own is not None:
        saved = load_training_state(own, learner, sampler)["finetune"]
        progress_state.update({k: saved[k] for k in progress_state})
    elif start_ckpt is not None and not cfg.from_scratch:
        load_learner_state(start_ckpt, learner, optimizer=cfg.optimizer == "restore")
    # The start's batch rules that fine-tuning's batches (MixedSampler: uniform offline rows) do not apply.
    not_carried = [f"{k} {v}" for k, v in (("source_mix", train_cfg.source_mix), ("only_successful", train_cfg.only_successful),
                                            ("negative_rate", train_cfg.negative_rate)) if v]
    # What the start's optimizer became: a model kept without its training state can only start a fresh one.
    start_optimizer = "resumed" if own is not None else (
        "restored" if start_ckpt is not None and not cfg.from_scratch and cfg.optimizer == "restore" else "fresh")
    if prior is None:  # the checkpoints this run writes carry no prior: their model config says none
        meta = {k: v for k, v in meta.items() if k != "prior"}
    policy = QTPolicy(learner.policy_net, discretizer, meta, device, prior=prior)

    # -- the run folder -----------------------------------------------------------------------------------
    env_step = int(progress_state["env_steps"])
    if own is None and (run_dir / "metrics.jsonl").exists():
        (run_dir / "metrics.jsonl").unlink()  # left by a run that stopped before its first checkpoint
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({**to_dict(cfg), "start": str(start_ckpt or model_dir), "start_optimizer": start_optimizer,
                                                     "start_batch_rules_not_applied": not_carried,
                                                     "offline_dataset": None if offline_path is None else str(Path(offline_path).resolve()), "into": str(into)}, indent=1))
    logger = MetricLogger(run_dir, resume_step=env_step if own is not None else None)
    online_count = 0 if online_data is None else online_data.num_episodes
    if own is not None and online_count > progress_state["online_episodes"]:
        # Episodes that ended after the checkpoint are kept (and count: they were real interaction).
        starts = online_data.chunks[0].episode_starts  # one part: the dataset as read at the start
        extra = starts[-1] - starts[progress_state["online_episodes"]]
        env_step += int(extra)
        progress_state["episodes_started"] += online_count - progress_state["online_episodes"]

    def checkpoint(step: int) -> Path:
        nonlocal appends
        if appends > 0 and (into / "meta.json").exists():
            compact_dataset(into)  # one chunk per append otherwise: keep the dataset cheap to open
            appends = 0
        extra = {"finetune": {"config": to_dict(cfg), "env_steps": step, "episodes_started": episodes_started,
                              "online_episodes": online_count, "updates_due": updates_due, "updates": updates, "into": str(into)}}
        return save_checkpoint(run_dir, step, learner, sampler, meta, train_cfg, cfg.keep_checkpoints,
                               dataset=str(Path(offline_path).resolve()) if offline_path else None, extra_state=extra,
                               prior=None if prior is None else (prior.net, prior.meta))

    def run_eval(step: int) -> dict:
        result = evaluate_policy(policy, env_id, cfg.eval_episodes, task=cfg.task, instruction=cfg.instruction)
        learner.online.train()
        logger.log(step, {"success_rate": result["success_rate"], "mean_return": result["mean_return"], "updates": updates}, prefix="eval")
        return result

    # -- the actors ---------------------------------------------------------------------------------------
    envs = [policy.make_env(env_id) for _ in range(cfg.num_envs)]
    episodes_started = int(progress_state["episodes_started"])
    updates_due = float(progress_state["updates_due"])
    updates = int(progress_state["updates"])  # fine-tuning updates (learner.num_updates also counts the offline run's)
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + env_step)

    def reset(i: int):
        nonlocal episodes_started
        obs, _ = envs[i].reset(seed=FINETUNE_SEED_OFFSET + 1_000_000 * cfg.seed + episodes_started)
        episodes_started += 1
        return obs

    obs = [reset(i) for i in range(cfg.num_envs)]
    appends = 0  # appends (chunks) since the online dataset was last compacted
    recorders = [EpisodeRecorder(o, policy.frames) for o in obs]
    recent = deque(maxlen=50)  # success of the last finished episodes
    window: dict[str, list[float]] = defaultdict(list)
    low, high = discretizer.low, discretizer.high

    bar = tqdm(total=cfg.env_steps, initial=min(env_step, cfg.env_steps), desc="finetune", disable=not cfg.progress,
               dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
    last_eval = None
    try:
        if own is None and start_ckpt is None and not cfg.from_scratch and cfg.optimizer == "restore":
            bar.write(f"{model_dir}: no training state kept with this model, so the optimizer starts fresh (with its warm-up)")
        if own is None and not_carried:
            bar.write(f"{start_ckpt or model_dir}: trained with {', '.join(not_carried)}; fine-tuning draws its offline rows "
                      "uniformly over the offline dataset (these do not apply)")
        if own is None and cfg.eval_episodes > 0:
            last_eval = run_eval(env_step)  # the start: the offline policy's success
            bar.write(f"env step {env_step}: eval success rate {last_eval['success_rate']:.3f} (the start)")
        while env_step < cfg.env_steps:
            eps = cfg.epsilon(env_step)
            policy.net.eval()  # the online network, when it acts (algo.act_with online): no dropout; update() sets train()
            actions = policy.act(stack_observations(obs), task=task_input, epsilon=eps, temperature=cfg.temperature,
                                 generator=generator, instruction=instruction)  # (N, d)
            finished = []
            for i, env in enumerate(envs):
                o, r, terminated, truncated, _ = env.step(actions[i])
                recorders[i].add(np.clip(actions[i], low, high).astype(np.float32), o, r, terminated, truncated)
                obs[i] = o
                if terminated or truncated:
                    ep = recorders[i].episode()
                    ep.update(source=ONLINE_SOURCE, task=task_id)
                    if instruction is not None:
                        ep["instruction"] = instruction
                    finished.append(ep)
                    obs[i] = reset(i)
                    recorders[i] = EpisodeRecorder(obs[i], policy.frames)
            before = env_step
            env_step += cfg.num_envs
            bar.update(min(env_step, cfg.env_steps) - min(before, cfg.env_steps))
            if finished:
                new = EpisodeDataset.from_episodes(finished, low, high, env_id=env_id, task_names=task_names)
                append_episodes(into, new, reopen=False)  # atomic: on disk before it is trained on
                appends += 1
                if appends >= COMPACT_EVERY:
                    compact_dataset(into)
                    appends = 0
                if online_data is None:
                    online_data = _OnlineData([new], task_names)
                else:
                    online_data.add(new)
                online_count = online_data.num_episodes
                sampler.set_online(make_transitions(online_data, str(into)))
                recent.extend(new.episode_success().tolist())
            updates_due += cfg.num_envs * cfg.updates_per_step
            while updates_due >= 1.0 and sampler.ready():
                metrics = learner.update(sampler.sample())
                updates_due -= 1.0
                updates += 1
                for k, v in metrics.items():
                    window[k].append(v)
            if not sampler.ready():
                updates_due = 0.0  # nothing to learn from yet: updates do not pile up
            if env_step // cfg.log_every > before // cfg.log_every or env_step >= cfg.env_steps:
                row = {k: float(np.mean(v)) for k, v in window.items()}
                window.clear()
                row.update(updates=updates, epsilon=eps, online_episodes=online_count, online_steps=sampler.online_steps)
                if recent:
                    row["episode_success"] = float(np.mean(recent))
                logger.log(env_step, row, prefix="finetune")
                bar.set_postfix({"success": f"{np.mean(recent):.2f}" if recent else "-", "updates": updates}, refresh=False)
            if learner.nonfinite_state() is not None:
                raise ValueError(f"{run_dir}: fine-tuning diverged at environment step {env_step} ({learner.nonfinite_state()} "
                                 "holds NaN or inf); lower --lr, and resume from the last checkpoint kept")
            if cfg.eval_episodes > 0 and cfg.eval_every > 0 and env_step // cfg.eval_every > before // cfg.eval_every and env_step < cfg.env_steps:
                last_eval = run_eval(env_step)
                bar.write(f"env step {env_step}: eval success rate {last_eval['success_rate']:.3f} ({updates} updates)")
            if env_step // cfg.save_every > before // cfg.save_every and env_step < cfg.env_steps:
                checkpoint(env_step)
        final = checkpoint(env_step)
        if cfg.eval_episodes > 0:
            last_eval = run_eval(env_step)
            bar.write(f"env step {env_step}: eval success rate {last_eval['success_rate']:.3f} ({updates} updates)")
            atomic_write_text(run_dir / "eval_info.json", json.dumps({"env_steps": env_step, "updates": updates, **last_eval}, indent=1))
        running = sum(len(r) > 0 for r in recorders)
        bar.write(f"{online_count} online episodes in {into}" + (f"; {running} still running at the end were not recorded (their steps count)" if running else ""))
    finally:
        bar.close()
        logger.close()
        for env in envs:
            env.close()
    return final


def read_curve(run_dir: Path) -> list[tuple[int, float]]:
    """[(environment step, evaluation success rate)] of a fine-tuning run, in order."""
    from .logging import read_metrics

    return [(int(r["step"]), float(r["eval/success_rate"])) for r in read_metrics(run_dir) if "eval/success_rate" in r]


