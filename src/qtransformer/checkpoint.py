"""Checkpoints: safetensors + JSON, written atomically.

    run/checkpoints/step_00006000/
        model/            rebuilds the policy alone
            config.json       network shape, action bins, task names, environment id, and "processor": the
                              observation pipeline's settings (processor.py: cameras, language encoder, instructions)
            model.safetensors weights, with the observation normaliser (encoder.obs_mean / obs_std)
            prior/            (runs trained with --prior) the BC network the policy decodes with, a model/ folder
        training_state/   what an exact resume needs besides the model
            target.safetensors (the target network), optimizer.safetensors, rng.safetensors (torch's RNG),
            online.safetensors when model/ holds the target network (algo.act_with 'target', the default),
            state.json (step, optimizer groups, config, dataset, batches drawn by the sampler)
    run/checkpoints/last  the name of the newest complete checkpoint

The learner's `state_dict()` gives what training_state/ holds and `load_state_dict()` takes it back;
this module only maps it to files. Each checkpoint is written into a temporary folder and renamed
into place, and `last` is replaced atomically after it, so a crash at any moment leaves the previous
checkpoint intact and pointed to.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors.torch import load_file, save_file

from .actions import ActionDiscretizer
from .config import model_from_dict, to_dict
from .fileio import atomic_write_text, fsync_tree, give_ordinary_mode, make_temp_dir, read_versioned_json, replace_dir
from .nets import QTransformerNet, check_model_size

MODEL_FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint path or file is wrong; the message names it and what to do."""


def _save_tensors(tensors: dict, path: Path) -> None:
    save_file(tensors, str(path))
    give_ordinary_mode(path)  # safetensors creates its files 0600


def _cpu(state: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


# -- model/ ------------------------------------------------------------------------------------------
def model_config(net: QTransformerNet, discretizer: ActionDiscretizer, model_cfg, extra: Optional[dict] = None) -> dict:
    """config.json of model/: what rebuilds the network and its action bins, plus `extra` facts."""
    extra = dict(extra or {})
    image_shapes = extra.pop("image_shapes", {})
    return {
        "format_version": MODEL_FORMAT_VERSION,
        "obs_dim": net.obs_dim,
        "action_dim": net.action_dim,
        "num_tasks": net.num_tasks,
        "image_shapes": {k: list(v) for k, v in image_shapes.items()},
        "imitation_head": net.imitation_head is not None,
        "language_dim": net.language_dim,
        "num_instructions": net.num_instructions,
        "model": to_dict(model_cfg),
        "actions": discretizer.to_dict(),
        **extra,
    }


def save_model(directory: Path, net: QTransformerNet, config: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _write_json(directory / "config.json", config)
    _save_tensors(_cpu(net.state_dict()), directory / "model.safetensors")


PRIOR_DIR = "prior"  # model/prior/: the BC network a policy decodes with (train --prior), a model/ folder itself


def resolve_model_dir(path: Union[str, Path]) -> Path:
    """Accept a run folder, a checkpoint folder, or a model/ folder."""
    path = Path(path)
    if (path / "checkpoints" / "last").exists():
        path = _pointed(path / "checkpoints" / "last")
    if (path / "model" / "config.json").exists():
        path = path / "model"
    if not (path / "config.json").exists() or not (path / "model.safetensors").exists():
        raise CheckpointError(
            f"{path}: no model here; pass a run folder, a checkpoint folder (checkpoints/step_N) or its model/ folder (a dataset folder holds meta.json and chunks/)"
        )
    return path


def load_model(path: Union[str, Path], device: str = "cpu") -> tuple[QTransformerNet, ActionDiscretizer, dict]:
    model_dir = resolve_model_dir(path)
    config_path, weights_path = model_dir / "config.json", model_dir / "model.safetensors"
    cfg = read_versioned_json(config_path, MODEL_FORMAT_VERSION, CheckpointError)
    try:
        discretizer = ActionDiscretizer.from_dict(cfg["actions"])
        args = (cfg["obs_dim"], cfg["action_dim"], discretizer.num_bins, cfg["num_tasks"], model_from_dict(cfg["model"]))
        image_shapes = {k: tuple(v) for k, v in cfg.get("image_shapes", {}).items()}
        imitation_head = bool(cfg.get("imitation_head", False))
        for name, value in zip(("obs_dim", "action_dim", "num_tasks"), (args[0], args[1], args[3]), strict=True):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"field '{name}' must be a whole number >= 0, got {value!r}")
        language = {"language_dim": cfg.get("language_dim", 0), "num_instructions": cfg.get("num_instructions", 0)}  # 0: no language
        for name, value in language.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"field '{name}' must be a whole number >= 0, got {value!r}")
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"{config_path}: missing or invalid field ({exc!r}); the checkpoint is incomplete or corrupted") from exc
    try:
        check_model_size(*args, image_shapes, device=device, training=False, imitation_head=imitation_head, **language)  # before allocating it
        net = QTransformerNet(*args, image_shapes=image_shapes, imitation_head=imitation_head, **language)
    except ValueError as exc:
        raise CheckpointError(f"{config_path}: {exc}; the checkpoint is corrupted or was made on a larger machine") from exc
    try:
        state = load_file(str(weights_path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises SafetensorError on truncated or garbage files
        raise CheckpointError(f"{weights_path}: cannot read ({exc}); the file is truncated or corrupted") from exc
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even with strict=False
        raise CheckpointError(f"{weights_path}: weights do not fit config.json ({exc})") from exc
    if missing or unexpected:
        raise CheckpointError(f"{weights_path}: weights do not fit config.json (missing {missing}, unexpected {unexpected})")
    return net.to(device).eval(), discretizer, cfg


# -- training_state/ ---------------------------------------------------------------------------------
def _optimizer_to_flat(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state dict as (tensors for safetensors, the rest for state.json)."""
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"state.{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(info["scalars"].items()):
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": info["param_groups"]}


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """run_dir/checkpoints/step_<step>, the folder `save_checkpoint` writes for `step`."""
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def save_checkpoint(
    run_dir: Path,
    step: int,
    learner,
    sampler,
    model_cfg_dict: dict,
    train_cfg,
    keep: int = 2,
    dataset: Optional[str] = None,
    extra_state: Optional[dict] = None,
    prior: Optional[tuple[QTransformerNet, dict]] = None,
) -> Path:
    """Write run_dir/checkpoints/step_<step> atomically and point `last` at it. `extra_state`: further
    JSON-ready fields for state.json (a fine-tuning run's counters: finetune.py). `prior`: (a BC network,
    its model config), written to model/prior/ (the policy's decoding prior, loaded with it).

    Refuses to write non-finite tensors; a write that fails (a full disk) leaves the previous checkpoint
    intact and pointed to, and raises a CheckpointError saying so."""
    ckpt_root = Path(run_dir) / "checkpoints"
    name = checkpoint_path(run_dir, step).name
    bad = learner.nonfinite_state()
    if bad is not None:
        raise CheckpointError(f"{ckpt_root / name}: not written: {bad} holds NaN or inf; the training diverged (lower --algo.lr)")
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        _remove_stale(ckpt_root)
        final = _write_checkpoint(ckpt_root, name, step, learner, sampler, model_cfg_dict, train_cfg, dataset, extra_state or {}, prior)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, safetensors' SafetensorError on a full disk, ...
        try:
            previous = last_checkpoint(run_dir)
        except CheckpointError:
            previous = None
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(
            f"{ckpt_root / name}: cannot write the checkpoint ({type(exc).__name__}: {exc}); {kept}: free disk space or fix the "
            "folder's permissions, then continue with --resume"
        ) from exc
    if keep > 0:
        old = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())[:-keep]
        for p in old:
            shutil.rmtree(p, ignore_errors=True)
    return final


_STALE = re.compile(r"\.(step_[0-9]+\.tmp-.+|step_[0-9]+\.old-[0-9]+|last\.tmp-[0-9]+)")


def _remove_stale(ckpt_root: Path) -> None:
    """Remove what killed checkpoint writes left behind (one writer per run folder: none is in progress)."""
    for p in ckpt_root.iterdir():
        if _STALE.fullmatch(p.name):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _write_checkpoint(
    ckpt_root: Path, name: str, step: int, learner, sampler, model_cfg_dict: dict, train_cfg, dataset, extra: dict,
    prior: Optional[tuple[QTransformerNet, dict]],
) -> Path:
    tmp = make_temp_dir(f".{name}.tmp-", ckpt_root)
    try:
        state = learner.state_dict()
        save_model(tmp / "model", learner.policy_net, model_cfg_dict)
        if prior is not None:
            save_model(tmp / "model" / PRIOR_DIR, *prior)
        ts = tmp / "training_state"
        ts.mkdir()
        _save_tensors(_cpu(state["target_net"]), ts / "target.safetensors")
        if learner.cfg.act_with == "target":  # model/ holds the target network: the online one goes here
            _save_tensors(_cpu(state["online"]), ts / "online.safetensors")
        opt_tensors, opt_info = _optimizer_to_flat(state["optimizer"])
        _save_tensors(opt_tensors, ts / "optimizer.safetensors")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        _save_tensors(rng, ts / "rng.safetensors")
        _write_json(ts / "state.json", {
            "step": step, "num_updates": state["num_updates"], "optimizer": opt_info,
            "train_config": to_dict(train_cfg), "dataset": dataset, "batches_drawn": sampler.state(), **extra,
        })
        fsync_tree(tmp)
        final = ckpt_root / name
        replace_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    atomic_write_text(ckpt_root / "last", name + "\n")
    return final


def _pointed(pointer: Path) -> Path:
    """The checkpoint folder that checkpoints/last names: only a step_N folder beside it."""
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{pointer}: cannot read ({exc}); write the name of a checkpoint folder (step_N) into it") from exc
    if not re.fullmatch(r"step_[0-9]+", name):
        raise CheckpointError(
            f"{pointer}: names {name!r}, not a checkpoint folder of this run; it must hold a name such as step_00006000 "
            "(a step_N folder beside it), never a path"
        )
    return pointer.parent / name


def last_checkpoint(run_dir: Path) -> Optional[Path]:
    pointer = Path(run_dir) / "checkpoints" / "last"
    if not pointer.exists():
        return None
    path = _pointed(pointer)
    if not (path / "training_state" / "state.json").exists():
        raise CheckpointError(f"{pointer}: points at {path.name}, which is incomplete; delete the pointer to start over")
    return path


def read_training_state_json(ckpt: Path) -> dict:
    path = Path(ckpt) / "training_state" / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read ({exc}); the checkpoint is corrupted: point checkpoints/last at an older step_N or start a new run") from exc


def load_training_state(ckpt: Path, learner, sampler) -> dict:
    """Restore the learner (online and target networks, optimizer), the sampler and torch's RNG in place;
    return state.json."""
    try:
        return _load_training_state(Path(ckpt), learner, sampler)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated files, shape mismatches: all mean "cannot resume from this"
        raise CheckpointError(
            f"{ckpt}: cannot resume from it ({type(exc).__name__}: {exc}); the checkpoint is corrupted or was made "
            "for another dataset: point checkpoints/last at an older step_N or start a new run"
        ) from exc


def _load_training_state(ckpt: Path, learner, sampler) -> dict:
    state = load_learner_state(ckpt, learner)
    rng = load_file(str(ckpt / "training_state" / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    sampler.set_state(state["batches_drawn"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return state


def load_learner_state(ckpt: Path, learner, optimizer: bool = True) -> dict:
    """Restore the learner's online and target networks and, with `optimizer`, AdamW's state and the
    update count (else both stay fresh: a new optimizer from update 0); return state.json."""
    ckpt = Path(ckpt)
    ts = ckpt / "training_state"
    state = read_training_state_json(ckpt)
    online = ts / "online.safetensors"  # present when model/ holds the target network (algo.act_with 'target')
    full = learner.state_dict()
    learner.load_state_dict({
        "online": load_file(str(online if online.exists() else ckpt / "model" / "model.safetensors"), device="cpu"),
        "target_net": load_file(str(ts / "target.safetensors"), device="cpu"),
        # the optimizer moves its tensors to the parameters' device
        "optimizer": _optimizer_from_flat(load_file(str(ts / "optimizer.safetensors"), device="cpu"), state["optimizer"]) if optimizer else full["optimizer"],
        "num_updates": state["num_updates"] if optimizer else 0,
    })
    return state
