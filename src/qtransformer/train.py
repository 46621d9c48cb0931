"""The training loop: sample, update, log, evaluate, checkpoint, resume."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from . import distributed
from .actions import ActionDiscretizer
from .algo import QTransformerLearner
from .checkpoint import (
    CheckpointError,
    checkpoint_path,
    last_checkpoint,
    load_training_state,
    model_config,
    read_training_state_json,
    save_checkpoint,
)
from .config import FROZEN_ON_RESUME, PRIOR_WEIGHT, ConfigError, TrainConfig, to_dict
from .data import Batch, DatasetError, EpisodeStore, TransitionSampler, build_transitions
from .data.sampler import imitation_mask
from .envs import env_id_from_file, is_multi_task, make_env
from .evaluate import evaluate_policy
from .fileio import atomic_write_text, check_output_dir
from .logging import MetricLogger, NullLogger
from .nets import QTransformerNet, check_model_size
from .nets.language import absolute_encoder_name
from .policy import QTPolicy
from .processor import ObservationProcessor, split_observation, with_instructions


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device: '{name}' is not a device; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: '{name}' asked for, but this torch build sees no CUDA device; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _differences(saved, now, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for k in sorted(set(saved) | set(now)):
            out += _differences(saved.get(k), now.get(k), f"{prefix}{k}.")
        return out
    return [] if saved == now else [f"{prefix[:-1]} (saved {saved!r}, now {now!r})"]


def _check_resume_config(cfg: TrainConfig, state: dict, where: Path) -> None:
    if "finetune" in state:
        raise ConfigError(f"{where}: a fine-tuning checkpoint; continue it with `qtransformer finetune --resume --out {where.parent.parent}`, "
                          "or train offline into a new --out folder")
    now, saved = to_dict(cfg), state["train_config"]
    if isinstance(saved.get("model"), dict):  # runs from before language conditioning had none: they resume as such
        saved["model"] = {"language_encoder": "none", "image_encoder": "cnn", "image_tokens": 0, "image_weights": None, "frames": 1, "value_atoms": 0, "bin_fourier": 0, **saved["model"]}
    if isinstance(saved.get("algo"), dict):  # fields added later, at the values that runs before them had
        saved["algo"] = {"hl_gauss_sigma": 0.75, "bin_smoothing": 0.0, "action_chunk": 1, "prior_in_targets": False, **saved["algo"]}
    diffs = [d for key in FROZEN_ON_RESUME for d in _differences(saved[key], now[key], f"{key}.")]
    # the BC prior a Q-Transformer run trained first (runs from before --prior trained none): another
    # would change what its checkpoints decode with half-way
    saved_prior = saved.get("prior", "none") if saved["algo"].get("method") == "qtransformer" else "none"
    if saved_prior != cfg.trained_prior():
        diffs.append(f"prior (saved {saved_prior!r}, now {cfg.trained_prior()!r})")
    elif saved_prior != "none" and saved.get("prior_weight", PRIOR_WEIGHT) != cfg.prior_weight:  # runs from before it decoded at PRIOR_WEIGHT
        diffs.append(f"prior_weight (saved {saved.get('prior_weight', PRIOR_WEIGHT)!r}, now {cfg.prior_weight!r})")
    dataset = str(Path(cfg.dataset).resolve())
    if state.get("dataset") not in (None, dataset):
        diffs.append(f"dataset (saved {state['dataset']!r}, now {dataset!r})")
    if diffs:
        raise ConfigError(
            f"{where}: cannot resume with different settings: {'; '.join(diffs)}. Repeat the original "
            "--preset, --config and flags (see config.json in the run folder), or train into a new --out folder"
        )


MAX_BATCH_OVER_DATA = 10  # refuse batches of more than this many times the dataset's transitions (and over 1024)


class TrainingDiverged(ValueError):
    """Training stopped because a value went NaN or inf; the message says which, when and why."""


def _divergence(learner, batch: Optional[Batch], step: int, cfg: TrainConfig, ds: EpisodeStore, run_dir: Path) -> TrainingDiverged:
    """The error that stops a run whose update at `step` went non-finite: the first non-finite quantity
    (found by recomputing the failed update on its batch), the likely cause and the checkpoint kept."""
    if batch is None:  # found before a checkpoint: the parameters
        quantity, detail = "parameters", learner.nonfinite_state()
    else:
        quantity, detail = learner.find_nonfinite(batch)
    if quantity == "batch inputs":
        try:
            ds.check_values()
            cause = f"non-finite inputs drawn from the dataset {ds.path} (its stored values are finite: the observation normaliser?)"
        except DatasetError as exc:
            cause = f"non-finite data: {exc}"
    else:
        big = learner.max_abs_parameter()
        lr = cfg.algo.lr
        if lr > 1e-2:
            cause = f"the learning rate is too high (algo.lr={lr:g}, largest parameter {big:.3g}); train again with a lower --algo.lr (default 3e-4)"
        else:
            cause = (f"the updates diverged (algo.lr={lr:g}, algo.grad_clip={cfg.algo.grad_clip:g}, largest parameter {big:.3g}); "
                     "train again with a lower --algo.lr, gradient clipping on (--algo.grad-clip 1) or without --amp-bf16")
    kept = last_healthy(run_dir)
    keep = f"the last healthy checkpoint {kept} is kept" if kept else "no checkpoint was written"
    return TrainingDiverged(
        f"{run_dir}: training stopped at step {step}: {quantity} went non-finite first ({detail}); likely cause: {cause}; "
        f"{keep} and nothing non-finite was saved"
    )


def last_healthy(run_dir: Path) -> Optional[Path]:
    try:
        return last_checkpoint(run_dir)
    except CheckpointError:
        return None


def _check_eval_env(env_id: str, ds: EpisodeStore) -> None:
    fix = "install it, pass --eval-env ID, or --eval-episodes 0 to train without evaluation"
    if is_multi_task(env_id):  # evaluated task by task: check the first
        from .envs.metaworld import single_task_env_ids

        env_id = single_task_env_ids(env_id)[0]
    try:
        env = make_env(env_id)
    except Exception as exc:  # noqa: BLE001 - any failure to build the environment
        raise ConfigError(f"cannot make the evaluation environment '{env_id}' ({exc}); {fix}") from exc
    state, images = split_observation(env.observation_space.sample())  # as the recorder and the policy split it
    act = env.action_space.shape
    env.close()
    found = {"state": state.shape, **{k: v.shape for k, v in images.items()}}
    wanted = {"state": (ds.obs_dim,), **ds.image_shapes}
    if found != wanted or act != (ds.action_dim,):
        raise ConfigError(
            f"evaluation environment '{env_id}' has observations {found} and actions {act}, the dataset "
            f"{ds.path} {wanted} and ({ds.action_dim},); {fix}"
        )


def resume_checkpoint(run_dir: Path, resume: bool) -> Optional[Path]:
    """The checkpoint a run in `run_dir` resumes from (None for a new run), after the checks every run
    folder gets: writable, no earlier run there unless `resume`, a checkpoint there if `resume`."""
    check_output_dir(run_dir, "--out")
    ckpt = last_checkpoint(run_dir) if resume else None
    if not resume and (run_dir / "checkpoints" / "last").exists():
        raise ConfigError(f"{run_dir}: holds a run already; pass --resume to continue it, or choose another --out")
    if resume and ckpt is None:
        raise ConfigError(f"{run_dir}: --resume given but no checkpoint found there")
    return ckpt


def init_value_head(net: QTransformerNet, value: float, hl_gauss_sigma: float = 0.75) -> None:
    """Start every bin's value near `value`, clipped to [0.01, 0.99]: the head's bias at logit(value); with
    value atoms, every bin's logits at log h(value) (the HL-Gauss histogram of `value`, floored at 1e-4)."""
    v = min(max(value, 0.01), 0.99)
    with torch.no_grad():
        if not net.value_atoms:
            net.head.bias.fill_(float(np.log(v / (1.0 - v))))
            return
        from .algo.losses import hl_gauss_histogram

        logits = hl_gauss_histogram(torch.tensor(v), net.value_atoms, hl_gauss_sigma).clamp(min=1e-4).log()  # (M,)
        net.head.bias.copy_(logits.repeat(net.num_bins))  # (K * M,): bin k's atoms at k*M .. k*M+M-1


def prior_source(cfg: TrainConfig, say=print) -> Optional[str]:
    """The episodes the BC prior of `cfg.prior` imitates on `cfg.dataset`: 'demonstration', 'successful' or
    None (no prior). 'auto' resolves to the demonstrations and 'auto-successful' to the successful episodes
    when the dataset has demonstrations, else to no prior (`say` prints that choice); an explicit source
    the data lacks is refused in one line."""
    if cfg.trained_prior() == "none" or cfg.dataset is None:
        return None
    sources, _, success = EpisodeStore.open(cfg.dataset).episode_table()
    has_demos, any_success = "demonstration" in set(sources), bool(np.any(success))
    source = cfg.prior
    if source in ("auto", "auto-successful"):
        if not has_demos:
            say(f"prior {source}: {cfg.dataset} has no demonstrations; training without a BC prior "
                  "(--prior successful trains one on the successful episodes)")
            return None
        if source == "auto-successful" and not any_success:
            say(f"prior auto-successful: {cfg.dataset} has no successful episode; the BC prior imitates the demonstrations")
        source = "successful" if source == "auto-successful" and any_success else "demonstration"
    if source == "demonstration" and not has_demos:
        raise ConfigError(f"prior: {cfg.dataset} has no episode with source 'demonstration'; pass --prior successful, auto or none")
    if source == "successful" and not any_success:
        raise ConfigError(f"prior: {cfg.dataset} has no successful episode to imitate; pass --prior none")
    return source


def prior_config(cfg: TrainConfig, say=print) -> Optional[TrainConfig]:
    """The BC run that `cfg.prior` asks for, trained first into OUT/prior (None: no prior): the same
    settings and seed, `--algo.method bc`, on the demonstrations' steps (`--source-mix demonstration 1.0`)
    or on the steps of successful episodes (`--only-successful`), without evaluations (prior_source
    chooses which). `say` prints what 'auto' or 'auto-successful' chose when it chose no prior."""
    source = prior_source(cfg, say)
    if source is None:
        return None
    return dataclasses.replace(
        cfg, out=Path(cfg.out) / "prior", prior="none", algo=dataclasses.replace(cfg.algo, method="bc"),
        source_mix={"demonstration": 1.0} if source == "demonstration" else {}, only_successful=source == "successful",
        eval_every=0, eval_episodes=0,
    )


def _train_prior(cfg: TrainConfig, ranks: distributed.Ranks, device: torch.device) -> tuple[TrainConfig, Optional[Path]]:
    """Train the BC prior `cfg.prior` asks for (or resume it); -> (the main run's config, the prior's
    final checkpoint or None). A run with a prior resumes wherever it stopped, in the prior or after."""
    run_dir = Path(cfg.out)
    main_ckpt = last_checkpoint(run_dir) if cfg.resume else None
    if main_ckpt is not None:  # a resumed run with other settings is refused before a prior is trained
        _check_resume_config(cfg, read_training_state_json(main_ckpt), main_ckpt)
    prior_cfg = prior_config(cfg, say=print if ranks.is_main else lambda *_: None)  # one line, not one per torchrun rank
    if prior_cfg is None:
        return cfg, None
    main_started, prior_started = (run_dir / "checkpoints" / "last").exists(), (prior_cfg.out / "checkpoints" / "last").exists()
    if not cfg.resume:
        resume_checkpoint(run_dir, False)  # a folder holding a run is refused before anything is trained
    elif not (main_started or prior_started):
        raise ConfigError(f"{run_dir}: --resume given but no checkpoint found there")
    if ranks.is_main:
        print(f"training the BC prior on {'the demonstrations' if prior_cfg.source_mix else 'the successful episodes'} first, into {prior_cfg.out} "
              f"(the policy decodes by Q + {cfg.prior_weight:g} x log p_prior: --prior-weight)")
    prior_final = _train(dataclasses.replace(prior_cfg, resume=cfg.resume and prior_started), ranks, device)
    return dataclasses.replace(cfg, resume=cfg.resume and main_started), prior_final


def train(cfg: TrainConfig) -> Path:
    """Train per `cfg`; return the final checkpoint folder. With `cfg.prior`, the BC prior first (OUT/prior).

    Under torchrun every process calls this: it joins the process group from torchrun's environment
    (distributed.py) and trains its shard of each global batch; only rank 0 writes the run folder."""
    ranks = distributed.from_env()
    distributed.check_batch_size(cfg.batch_size, ranks.world_size)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, language_encoder=absolute_encoder_name(cfg.model.language_encoder)))
    threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        ranks, device = distributed.start(ranks, pick_device(cfg.device), cfg.dist_timeout_s)
        cfg, prior = _train_prior(cfg, ranks, device)
        final = _train(cfg, ranks, device, prior)
        ranks.close()  # not on an error: the process ends, and torchrun stops the others
        return final
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, ranks: distributed.Ranks, device: torch.device, prior: Optional[Path] = None) -> Path:
    """One run; `prior`: a BC run's checkpoint that evaluations decode with and every checkpoint carries."""
    if cfg.dataset is None:
        raise ConfigError("no dataset given: pass --dataset DIR (make one with `qtransformer make-dataset builtin --out DIR`)")
    run_dir = Path(cfg.out)
    ckpt = resume_checkpoint(run_dir, cfg.resume)
    if ckpt is not None:
        _check_resume_config(cfg, read_training_state_json(ckpt), ckpt)

    seed_everything(cfg.seed)  # the same on every rank: the same initial networks
    ds = EpisodeStore.open(cfg.dataset)
    ds.check_values()  # once per dataset: NaN/inf or out-of-range values would only show up as a diverged run
    eval_env = cfg.eval_env
    if eval_env is None and cfg.eval_episodes > 0:  # an id read from meta.json never imports a module
        eval_env = env_id_from_file(ds.env_id, ds.path / "meta.json", flag="--eval-env", error=DatasetError)
    can_eval = bool(eval_env) and cfg.eval_episodes > 0
    if can_eval:  # fail now, before the run folder is touched, not after the first eval_every steps
        _check_eval_env(eval_env, ds)
    h = cfg.algo.action_chunk  # one decision = h steps: the network chooses h x d bins (step-major)
    discretizer = ActionDiscretizer(np.tile(ds.action_low, h), np.tile(ds.action_high, h), cfg.algo.num_bins)
    transitions = build_transitions(ds, discretizer, cfg.algo.gamma, cfg.algo.n_step, h)
    try:
        processor = ObservationProcessor.for_dataset(ds, cfg.model.language_encoder, cfg.model.frames)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    language_table = None
    condition_groups = np.arange(ds.num_tasks)  # negative relabelling: the task of each conditioning id
    if processor.uses_language:  # embedded once per distinct instruction, cached in the dataset folder
        processor, language_table, step_instruction = with_instructions(processor, ds)
        # A language model is conditioned on the instruction, not the task id: the sampler's per-step
        # conditioning ids index its training instructions (the network's language table).
        condition_groups = np.zeros(len(processor.instructions), np.int64)
        condition_groups[step_instruction] = transitions["task"]  # each instruction's task
        transitions["task"] = step_instruction
    language = {"language_dim": processor.language_dim, "num_instructions": len(processor.instructions) if processor.uses_language else 0}
    with_imitation = cfg.algo.imitation_weight > 0 and cfg.algo.method == "qtransformer"
    if with_imitation:
        try:
            transitions["imitate"] = imitation_mask(transitions, cfg.algo.imitation_source)
        except ValueError as exc:
            raise ConfigError(f"{cfg.dataset}: {exc}") from None

    if cfg.batch_size > max(MAX_BATCH_OVER_DATA * ds.num_steps, 1024):  # a slightly larger batch only repeats transitions
        raise ConfigError(
            f"batch_size: {cfg.batch_size} is far larger than the dataset's {ds.num_steps} transitions ({ds.path}); "
            f"lower --batch-size to at most {max(ds.num_steps, 1024)}"
        )
    try:  # before allocating: an absurd size would fill the memory first
        check_model_size(
            ds.obs_dim, discretizer.action_dim, cfg.algo.num_bins, ds.num_tasks, cfg.model, ds.image_shapes, device, training=True,
            imitation_head=with_imitation, **language,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    net = QTransformerNet(
        ds.obs_dim, discretizer.action_dim, cfg.algo.num_bins, ds.num_tasks, cfg.model, ds.image_shapes, imitation_head=with_imitation,
        **language,
    )
    if language_table is not None:
        net.set_language_table(torch.from_numpy(language_table))
    if cfg.model.image_weights and ckpt is None:  # a resumed run has them in its checkpoint
        from .nets.vision import load_efficientnet_weights

        try:
            for enc in net.image_encoders:
                load_efficientnet_weights(enc, cfg.model.image_weights)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    if net.encoder is not None:
        mean, std = ds.observation_stats()
        net.encoder.set_normalizer(torch.from_numpy(mean), torch.from_numpy(std))
    if cfg.algo.head_init == "data_mean" and cfg.algo.method == "qtransformer":
        init_value_head(net, float(np.mean(transitions["mc_return"])), cfg.algo.hl_gauss_sigma)
    prior_policy = None
    if prior is not None:  # trained on the same data with the same settings: the same bins, frames and tasks
        prior_policy = QTPolicy.from_checkpoint(prior, device=str(device))
    elif cfg.algo.prior_in_targets and cfg.algo.method == "qtransformer":
        raise ConfigError(f"--algo.prior-in-targets needs a BC prior, and this run trains none (--prior {cfg.prior} on {cfg.dataset}); "
                          "pass --prior demonstration or successful")
    learner = QTransformerLearner(
        net, cfg.algo, device, amp_bf16=cfg.amp_bf16, ddp=ranks.enabled, compile=cfg.compile,
        prior_net=prior_policy.net if prior_policy is not None and cfg.algo.prior_in_targets else None, prior_weight=cfg.prior_weight,
    )
    sampler = TransitionSampler(
        transitions, cfg.batch_size, device, seed=cfg.seed, prefetch=cfg.prefetch, source_mix=cfg.source_mix,
        only_successful=cfg.only_successful, rank=ranks.rank, world_size=ranks.world_size,
        negative_rate=cfg.negative_rate if cfg.algo.method == "qtransformer" else 0.0, condition_groups=condition_groups,
        frames=cfg.model.frames if ds.image_shapes else 1,
    )
    model_meta = model_config(
        net, discretizer, cfg.model,
        {"env_id": ds.env_id, "task_names": ds.task_names, "algo": to_dict(cfg.algo), "image_shapes": ds.image_shapes,
         "processor": processor.to_dict()},
    )
    if prior_policy is not None:
        imitated = "successful" if read_training_state_json(prior)["train_config"]["only_successful"] else "demonstration"  # as the prior's run recorded it
        model_meta["prior"] = {"source": imitated, "weight": cfg.prior_weight}

    start = 0
    if ckpt is not None:  # every rank reads the same checkpoint (the sampler's counter is global: any world size resumes it)
        start = load_training_state(ckpt, learner, sampler)["step"]
        if start >= cfg.steps:
            if ranks.is_main:
                print(f"{ckpt}: already at step {start} of {cfg.steps}; nothing to do (raise --steps to train on)")
            return ckpt
    elif (run_dir / "metrics.jsonl").exists() and ranks.is_main:
        (run_dir / "metrics.jsonl").unlink()  # left by a run that stopped before its first checkpoint
    dataset_path = str(Path(cfg.dataset).resolve())
    if ranks.is_main:  # the dataset as an absolute path: `finetune` and readers find it from any folder
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps({**to_dict(cfg), "dataset": dataset_path}, indent=1))
    logger = MetricLogger(run_dir, resume_step=start if ckpt is not None else None) if ranks.is_main else NullLogger()
    can_eval = can_eval and ranks.is_main  # the others go on to the next step's all-reduce and wait there

    def checkpoint(step: int) -> Path:
        """Rank 0 writes the checkpoint of `step`; the others wait for it to be complete."""
        if learner.nonfinite_state() is not None:  # the same networks on every rank: all stop alike
            raise _divergence(learner, None, step, cfg, ds, run_dir)
        path = checkpoint_path(run_dir, step)
        if ranks.is_main:
            path = save_checkpoint(run_dir, step, learner, sampler, model_meta, cfg, cfg.keep_checkpoints, dataset=dataset_path,
                                   prior=None if prior_policy is None else (prior_policy.net, prior_policy.meta))
        ranks.barrier()
        return path

    def run_eval(step: int) -> dict:
        policy = QTPolicy(learner.policy_net, discretizer, model_meta, device, prior=prior_policy)
        result = evaluate_policy(policy, eval_env, cfg.eval_episodes)
        learner.online.train()
        logger.log(step, {"success_rate": result["success_rate"], "mean_return": result["mean_return"]}, prefix="eval")
        return result

    window: dict[str, list[float]] = defaultdict(list)
    last_eval = None
    tick, tick_step = time.perf_counter(), start
    bar = tqdm(
        total=cfg.steps, initial=start, desc="train", disable=not (cfg.progress and ranks.is_main), dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,  # a log file gets a line every 30 s, not every step
    )
    step = start
    try:
        while step < cfg.steps:
            batch = sampler.sample()
            metrics = learner.update(batch)  # under torchrun: the means over the ranks
            step += 1
            distributed.fail_if_asked(ranks, step)
            if not (math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])):  # the update was not applied
                raise _divergence(learner, batch, step, cfg, ds, run_dir)
            for k, v in metrics.items():
                window[k].append(v)
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                row = {k: float(np.mean(v)) for k, v in window.items()}
                row["steps_per_s"] = (step - tick_step) / max(now - tick, 1e-9)
                tick, tick_step = now, step
                window.clear()
                logger.log(step, row, prefix="train")
                shown = {"loss": "loss", "td": "td_loss", "q": "q_data", "acc": "bin_accuracy"}
                bar.set_postfix({k: f"{row[m]:.4f}" for k, m in shown.items() if m in row}, refresh=False)
            if can_eval and cfg.eval_every > 0 and step % cfg.eval_every == 0 and step < cfg.steps:
                last_eval = run_eval(step)
                bar.write(f"step {step}: eval success rate {last_eval['success_rate']:.3f} over {cfg.eval_episodes} episodes")
                tick = time.perf_counter()  # steps_per_s measures training only
            if step % cfg.save_every == 0 and step < cfg.steps:
                checkpoint(step)
                tick = time.perf_counter()
        final = checkpoint(step)
        if can_eval:
            last_eval = run_eval(step)
            atomic_write_text(run_dir / "eval_info.json", json.dumps({"step": step, **last_eval}, indent=1))
            bar.write(f"step {step}: eval success rate {last_eval['success_rate']:.3f} over {cfg.eval_episodes} episodes")
    finally:
        bar.close()
        logger.close()
        sampler.close()
    return final
