"""Import offline-RL datasets from other formats: D4RL arrays, robomimic HDF5 and Minari datasets.

Each reader turns its source into per-episode dicts and builds the dataset with
`EpisodeDataset.from_episodes`, so the usual validation runs; `import_dataset` then saves it, and
nothing is written when a check fails. Every bad input raises `ImportSourceError` (a `DatasetError`)
with a one-line message naming the file, the episode, the field and the fix.

Rules shared by the readers (see docs/dataset_format.md, "Importing"):

- A step that is both terminal and timeout is imported as terminal (its timeout flag is cleared).
- When the source has no next observations, the next observation of step t is observation t+1 of
  the same episode. The final step has none: it is dropped when the episode ended by a timeout (no
  state to bootstrap from; the step before becomes the timeout), and kept when it ended by a
  terminal (no bootstrap, so its own observation is stored as a placeholder).
- Action bounds come from the source when it declares them, otherwise from the data (per-dimension
  min/max); a dimension that is constant in the data is widened by 1 on each side.
- Images (robomimic, Minari), as `envs.rollout.split_observation` sees them: uint8 arrays of shape
  (H, W, C) per step become image observations ("images" and "final_images"); other arrays with more
  than one dimension per step (float images, (H, W) depth maps) are skipped with a note. An image key
  names files, so it must match [A-Za-z0-9_.-]+: a key that does not is rejected (ImportSourceError
  naming the key; rename it in the source or pass images=False / --no-images), never renamed, because
  a renamed key would no longer match the evaluation environment's observation keys.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .dataset import DatasetError, EpisodeDataset

FORMATS = ("d4rl", "robomimic", "minari")
D4RL_REQUIRED = ("observations", "actions", "rewards", "terminals", "timeouts")
D4RL_OPTIONAL = ("next_observations", "action_low", "action_high")
INSTALL_HINT = "install the import extra: pip install -e '.[import]'"
DEFAULT_SOURCE = {"d4rl": "d4rl", "robomimic": "demonstration", "minari": "minari"}
IMAGE_KEY = re.compile(r"[A-Za-z0-9_.-]+")  # image keys name files (data/store.py)


class ImportSourceError(DatasetError):
    """The source being imported is malformed or unreadable; the message names file, episode, field and fix."""


@dataclass
class ImportResult:
    dataset: EpisodeDataset
    notes: list[str] = field(default_factory=list)
    """Things the user should know: imported and skipped image keys, dropped steps, widened bounds."""


# -- shared helpers -----------------------------------------------------------------------------


def _fail(msg: str) -> None:
    raise ImportSourceError(msg)


def _h5py():
    try:
        import h5py
    except ImportError as exc:
        raise ImportSourceError(f"reading HDF5 files needs h5py, which is not installed; {INSTALL_HINT}") from exc
    return h5py


def _numeric(where: str, name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        _fail(f"{where}, field '{name}': dtype {arr.dtype} is not numeric; store numbers")
    return arr


def _per_step(where: str, name: str, arr: np.ndarray) -> np.ndarray:
    """A (T,) or (T, 1) array as (T,)."""
    arr = _numeric(where, name, arr)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        _fail(f"{where}, field '{name}': shape {arr.shape}, expected one value per step (steps,)")
    return arr


def _first_bad_row(arr: np.ndarray) -> int:
    """Index of the first row holding NaN or inf, or -1."""
    arr = np.asarray(arr)
    if arr.dtype == bool or arr.shape[0] == 0:
        return -1
    finite = np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    return -1 if finite.all() else int(np.argmin(finite))


def _check_finite(where: str, name: str, arr: np.ndarray) -> None:
    t = _first_bad_row(arr)
    if t >= 0:
        _fail(f"{where}, step {t}, field '{name}': NaN or inf; clean or drop that episode")


def _check_image_key(where: str, field_name: str, key: str) -> None:
    """Image keys name files (images.<key>.npy): reject one that cannot, naming it and the fix."""
    if not IMAGE_KEY.fullmatch(key):
        _fail(f"{where}, field '{field_name}': image key {key!r} cannot name a file (allowed: letters, digits, '_', '-', '.'); "
              "rename it in the source, or pass --no-images to skip the images")


def _image_like_reason(dtype, shape: tuple) -> Optional[str]:
    """Why a per-step array of `dtype` and per-step `shape` (ndim > 1) is not imported as an image, or None."""
    if len(shape) == 2:
        return f"shape (steps, {shape[0]}, {shape[1]}): no channel axis, images are (H, W, C)"
    if len(shape) != 3:
        return f"per-step shape {tuple(shape)}: images are (H, W, C)"
    if np.dtype(dtype) != np.uint8:
        return f"dtype {np.dtype(dtype)}, images must be uint8"
    return None


def _episode(obs, next_obs, actions, rewards, terminal: bool, source: str) -> dict:
    T = len(rewards)
    terminals = np.zeros(T, bool)
    timeouts = np.zeros(T, bool)
    (terminals if terminal else timeouts)[-1] = True
    return {
        "observations": obs, "next_observations": next_obs, "actions": actions, "rewards": rewards,
        "terminals": terminals, "timeouts": timeouts, "source": source,
    }


def _episode_without_next(obs, actions, rewards, terminal: bool, source: str, images: Optional[dict] = None) -> Optional[dict]:
    """Next observations from the observations; None when nothing is left (see the module docstring).
    `images` {key: (T, H, W, C)}: a terminal episode keeps them all and repeats its last image as the final
    image (a placeholder, never bootstrapped from); a timeout episode's dropped last step gives the final image."""
    images = images or {}
    if terminal:
        next_obs = np.concatenate([obs[1:], obs[-1:]])
        ep = _episode(obs, next_obs, actions, rewards, True, source)
        ep["images"], ep["final_images"] = dict(images), {k: v[-1] for k, v in images.items()}
        return ep
    if len(rewards) < 2:
        return None
    ep = _episode(obs[:-1], obs[1:], actions[:-1], rewards[:-1], False, source)
    ep["images"], ep["final_images"] = {k: v[:-1] for k, v in images.items()}, {k: v[-1] for k, v in images.items()}
    return ep


def _drop_note(dropped_steps: int, dropped_episodes: int, dropped_reward_steps: int, field_name: str) -> list[str]:
    if not dropped_steps:
        return []
    note = (
        f"no '{field_name}': dropped the last step of {dropped_steps} episode(s) that ended by a timeout "
        "(no next state to bootstrap from)"
    )
    if dropped_episodes:
        note += f"; {dropped_episodes} one-step episode(s) were dropped whole"
    if dropped_reward_steps:
        note += f"; {dropped_reward_steps} dropped step(s) had a positive reward"
    return [note]


def _bounds_from_data(actions: np.ndarray, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    low = actions.min(axis=0).astype(np.float64)
    high = actions.max(axis=0).astype(np.float64)
    flat = np.flatnonzero(high <= low)
    if flat.size:
        low[flat] -= 1.0
        high[flat] += 1.0
        notes.append(f"action dimension(s) {flat.tolist()} are constant in the data: their bounds were widened by 1 each side")
    notes.append("action bounds taken from the data (per-dimension min/max)")
    return low, high


def _check_bounds(where: str, low, high, d: int) -> tuple[np.ndarray, np.ndarray]:
    low = np.asarray(low, dtype=np.float64).reshape(-1)
    high = np.asarray(high, dtype=np.float64).reshape(-1)
    for name, arr in (("action_low", low), ("action_high", high)):
        if arr.shape != (d,):
            _fail(f"{where}, field '{name}': {arr.shape[0]} entries but the actions have {d} dimensions; give one bound per dimension")
        if not np.isfinite(arr).all():
            _fail(f"{where}, field '{name}': NaN or inf; give finite bounds")
    if np.any(high <= low):
        bad = np.flatnonzero(high <= low).tolist()
        _fail(f"{where}, fields 'action_low'/'action_high': high <= low in dimension(s) {bad}; give high > low")
    return low, high


def _build(episodes: list[dict], low, high, where: str, env_id: Optional[str]) -> EpisodeDataset:
    if not episodes:
        _fail(f"{where}: no episode is left to import; see the notes on dropped steps")
    return EpisodeDataset.from_episodes(episodes, low, high, env_id=env_id, source_path=where)


# -- D4RL -------------------------------------------------------------------------------------


def _read_flat_arrays(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".hdf5", ".h5"):
        _fail(f"{path}: unknown file type '{suffix}'; the d4rl format reads .npz, .hdf5 or .h5 files")
    if not path.is_file():
        _fail(f"{path}: no such file; give the path of a D4RL .npz or .hdf5 file")
    wanted = D4RL_REQUIRED + D4RL_OPTIONAL
    arrays: dict[str, np.ndarray] = {}
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.files)
                for k in wanted:
                    if k in keys:
                        arrays[k] = np.asarray(z[k])
        else:
            h5py = _h5py()
            with h5py.File(path, "r") as f:
                keys = list(f.keys())
                for k in wanted:
                    if k in f:
                        if not isinstance(f[k], h5py.Dataset):
                            _fail(f"{path}, field '{k}': a group, expected an array; store '{k}' as a dataset at the file's root")
                        arrays[k] = np.asarray(f[k][()])
    except ImportSourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupted files surface as many exception types
        raise ImportSourceError(f"{path}: cannot read ({type(exc).__name__}: {exc}); the file is truncated, corrupted or not a {suffix[1:]} file") from exc
    return arrays, keys


def read_d4rl(path, env_id: Optional[str] = None, source: Optional[str] = None) -> ImportResult:
    """A .npz/.hdf5 file of flat D4RL arrays (see docs/dataset_format.md, "Importing")."""
    path = Path(path)
    source = source or DEFAULT_SOURCE["d4rl"]
    notes: list[str] = []
    arrays, keys = _read_flat_arrays(path)
    where = str(path)
    for k in D4RL_REQUIRED:
        if k not in arrays:
            fix = "add it (all False if the data has no time limits)" if k == "timeouts" else "add it"
            if "data" in keys:
                fix = "this looks like a robomimic file: use --format robomimic"
            elif any(str(k2).startswith("episode_") for k2 in keys):
                fix = "this looks like a Minari file: use --format minari with the dataset id"
            _fail(f"{where}, field '{k}': missing (the file holds {', '.join(map(str, keys[:8])) or 'nothing'}); {fix}")
    obs = _numeric(where, "observations", arrays["observations"])
    if obs.ndim != 2:
        _fail(f"{where}, field 'observations': shape {obs.shape}, expected (steps, obs_dim); flatten the observations")
    N = obs.shape[0]
    if N == 0:
        _fail(f"{where}, field 'observations': the file holds no steps; export some episodes")
    actions = _numeric(where, "actions", arrays["actions"])
    if actions.ndim == 1:
        actions = actions[:, None]
    if actions.ndim != 2:
        _fail(f"{where}, field 'actions': shape {actions.shape}, expected (steps, action_dim)")
    rewards = _per_step(where, "rewards", arrays["rewards"])
    terminals = _per_step(where, "terminals", arrays["terminals"])
    timeouts = _per_step(where, "timeouts", arrays["timeouts"])
    next_obs = arrays.get("next_observations")
    per_step = {"actions": actions, "rewards": rewards, "terminals": terminals, "timeouts": timeouts}
    if next_obs is not None:
        next_obs = _numeric(where, "next_observations", next_obs)
        if next_obs.ndim != 2 or next_obs.shape[1] != obs.shape[1]:
            _fail(f"{where}, field 'next_observations': shape {next_obs.shape}, expected (steps, {obs.shape[1]}) like 'observations'")
        per_step["next_observations"] = next_obs
    for k, arr in per_step.items():
        if arr.shape[0] != N:
            _fail(f"{where}, field '{k}': {arr.shape[0]} rows but 'observations' has {N}; every per-step array needs one row per step")

    # Episodes end at a step with terminals or timeouts; a trailing run with neither ends in a timeout.
    for k in ("terminals", "timeouts"):
        t = _first_bad_row(per_step[k])
        if t >= 0:
            _fail(f"{where}, step {t}, field '{k}': NaN or inf; flags must be 0/1")
    term = terminals.astype(bool)
    tout = timeouts.astype(bool) & ~term
    ends = np.flatnonzero(term | tout)
    if ends.size == 0 or ends[-1] != N - 1:
        last = int(ends[-1]) + 1 if ends.size else 0
        notes.append(f"the last {N - last} step(s) end with neither flag: imported as an episode cut by a timeout at its last step")
        ends = np.append(ends, N - 1)
        tout = tout.copy()
        tout[N - 1] = True
    starts = np.concatenate([[0], ends[:-1] + 1])

    checked = {"observations": obs, "actions": actions, "rewards": rewards}
    if next_obs is not None:
        checked["next_observations"] = next_obs
    for k, arr in checked.items():
        t = _first_bad_row(arr)
        if t >= 0:
            e = int(np.searchsorted(ends, t))
            _fail(f"{where}: episode {e} (file steps {starts[e]}..{ends[e]}), step {t - starts[e]}, field '{k}': NaN or inf; clean or drop that episode")

    episodes = []
    dropped = [0, 0, 0]
    for s, t in zip(starts.tolist(), ends.tolist(), strict=True):
        sl = slice(s, t + 1)
        is_terminal = bool(term[t])
        if next_obs is not None:
            episodes.append(_episode(obs[sl], next_obs[sl], actions[sl], rewards[sl], is_terminal, source))
            continue
        ep = _episode_without_next(obs[sl], actions[sl], rewards[sl], is_terminal, source)
        if not is_terminal:
            dropped[0] += 1
            dropped[2] += int(rewards[t] > 0)
        if ep is None:
            dropped[1] += 1
        else:
            episodes.append(ep)
    notes += _drop_note(*dropped, "next_observations")

    if ("action_low" in arrays) != ("action_high" in arrays):
        missing = "action_high" if "action_low" in arrays else "action_low"
        _fail(f"{where}, field '{missing}': missing while its partner is present; give both bounds or neither")
    if "action_low" in arrays:
        low, high = _check_bounds(where, arrays["action_low"], arrays["action_high"], actions.shape[1])
    elif episodes:
        low, high = _bounds_from_data(np.concatenate([ep["actions"] for ep in episodes]), notes)
    else:
        low = high = None
    return ImportResult(_build(episodes, low, high, where, env_id), notes)


# -- robomimic ------------------------------------------------------------------------------------


def read_robomimic(path, env_id: Optional[str] = None, source: Optional[str] = None, images: bool = True) -> ImportResult:
    """A robomimic HDF5 file: data/demo_<i>/{obs/<key>, actions, rewards, dones, next_obs/<key>}.

    Low-dimensional obs keys ((T,) or (T, k)) form the state; uint8 (T, H, W, C) keys become image
    observations (unless `images` is False); other keys with ndim > 2 are skipped with a note."""
    path = Path(path)
    source = source or DEFAULT_SOURCE["robomimic"]
    where = str(path)
    if not path.is_file():
        _fail(f"{where}: no such file; give the path of a robomimic .hdf5 file")
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            return _read_robomimic_open(f, h5py, where, env_id, source, images)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupted files surface as many exception types
        raise ImportSourceError(f"{where}: cannot read ({type(exc).__name__}: {exc}); the file is truncated, corrupted or not an HDF5 file") from exc


def _robomimic_state(demo, group: str, state_keys: list[str], state_dims: dict[str, int], T: int, ew: str) -> np.ndarray:
    """The state keys of demo/<group>, each (T, k), concatenated in sorted key order ((T, 0) without any)."""
    if group not in demo:
        _fail(f"{ew}, field '{group}': missing; every demo needs obs/ (next_obs/ is optional)")
    parts = [np.zeros((T, 0), np.float32)]
    for k in state_keys:
        if k not in demo[group]:
            _fail(f"{ew}, field '{group}/{k}': missing; every demo needs the observation keys {', '.join(state_keys)} (from the first demo)")
        arr = _numeric(ew, f"{group}/{k}", demo[group][k][()])
        if arr.ndim > 2:
            _fail(f"{ew}, field '{group}/{k}': shape {arr.shape}, but in the first demo it is low-dimensional; keep keys consistent")
        arr = arr.reshape(arr.shape[0], -1)
        if arr.shape[0] != T:
            _fail(f"{ew}, field '{group}/{k}': {arr.shape[0]} steps but 'actions' has {T}; every per-step array needs one row per step")
        if state_dims.setdefault(k, arr.shape[1]) != arr.shape[1]:
            _fail(f"{ew}, field '{group}/{k}': {arr.shape[1]} values per step but {state_dims[k]} in the first demo; keep keys consistent")
        _check_finite(ew, f"{group}/{k}", arr)
        parts.append(arr)
    return np.concatenate(parts, axis=1)


def _robomimic_images(demo, image_keys: list[str], image_shapes: dict[str, tuple], T: int, ew: str) -> tuple[dict, dict]:
    """({key: obs/<key> (T, H, W, C) uint8}, {key: next_obs/<key>[-1]}) of one demo; the second is empty without next_obs/."""
    imgs, finals = {}, {}
    for k in image_keys:
        for group in ("obs", "next_obs") if "next_obs" in demo else ("obs",):
            name = f"{group}/{k}"
            if k not in demo[group]:
                _fail(f"{ew}, field '{name}': missing; every demo needs the image keys {', '.join(image_keys)} (from the first demo) "
                      "under obs/ and, when it has next_obs/, under next_obs/; add it or pass --no-images")
            dset = demo[group][k]
            shape, dtype = tuple(dset.shape), np.dtype(dset.dtype)
            if dtype != np.uint8 or len(shape) != 4:
                _fail(f"{ew}, field '{name}': dtype {dtype}, shape {shape}, but in the first demo it is a uint8 (T, H, W, C) image; "
                      "keep keys consistent or pass --no-images")
            if shape[0] != T:
                _fail(f"{ew}, field '{name}': {shape[0]} steps but 'actions' has {T}; every per-step array needs one row per step")
            if image_shapes.setdefault(k, shape[1:]) != shape[1:]:
                _fail(f"{ew}, field '{name}': images of shape {shape[1:]} but {image_shapes[k]} in the first demo; "
                      "resize them to one shape per key")
            if group == "obs":
                imgs[k] = np.asarray(dset[()], dtype=np.uint8)
            else:
                finals[k] = np.asarray(dset[T - 1], dtype=np.uint8)  # only the last row is read
    return imgs, finals


def _read_robomimic_open(f, h5py, where: str, env_id, source: str, images: bool = True) -> ImportResult:
    notes: list[str] = []
    if "data" not in f or not isinstance(f["data"], h5py.Group):
        hint = " (this looks like a D4RL file: use --format d4rl)" if "observations" in f else ""
        _fail(f"{where}, field 'data': missing{hint}; a robomimic file holds groups data/demo_0, data/demo_1, ...")
    data = f["data"]
    demos = []
    for name in data:
        m = re.fullmatch(r"demo_(\d+)", name)
        if m:
            demos.append((int(m.group(1)), name))
    if not demos:
        _fail(f"{where}, field 'data': holds no demo_<i> groups; a robomimic file holds data/demo_0, data/demo_1, ...")
    demos.sort()
    others = sorted(set(data) - {name for _, name in demos})
    if others:
        notes.append(f"ignored entries under data/ that are not demo_<i>: {', '.join(others)}")

    state_keys: Optional[list[str]] = None
    image_keys: list[str] = []
    state_dims: dict[str, int] = {}
    image_shapes: dict[str, tuple] = {}
    skipped: dict[str, str] = {}  # image-like obs key -> why it is not imported
    episodes = []
    dropped = [0, 0, 0]
    repeated_final = 0
    for e, (_, name) in enumerate(demos):
        demo = data[name]
        ew = f"{where}: episode {e} (data/{name})"
        for k in ("obs", "actions", "rewards", "dones"):
            if k not in demo:
                _fail(f"{ew}, field '{k}': missing; every demo needs obs/, actions, rewards and dones")
        if not isinstance(demo["obs"], h5py.Group):
            _fail(f"{ew}, field 'obs': not a group; store one dataset per observation key under obs/")
        actions = _numeric(ew, "actions", demo["actions"][()])
        if actions.ndim == 1:
            actions = actions[:, None]
        if actions.ndim != 2:
            _fail(f"{ew}, field 'actions': shape {actions.shape}, expected (steps, action_dim)")
        T = actions.shape[0]
        if T == 0:
            _fail(f"{ew}, field 'actions': the episode is empty; drop that demo")
        rewards = _per_step(ew, "rewards", demo["rewards"][()])
        dones = _per_step(ew, "dones", demo["dones"][()])
        for k, arr in (("rewards", rewards), ("dones", dones)):
            if arr.shape[0] != T:
                _fail(f"{ew}, field '{k}': {arr.shape[0]} steps but 'actions' has {T}; every per-step array needs one row per step")

        if state_keys is None:  # the first demo decides which keys are state, images or skipped
            state_keys = []
            for k in sorted(demo["obs"]):
                dset = demo["obs"][k]
                if dset.ndim <= 2:
                    state_keys.append(k)
                    continue
                reason = _image_like_reason(dset.dtype, tuple(dset.shape[1:]))
                if reason is None and not images:
                    reason = "--no-images"
                if reason is None:
                    _check_image_key(ew, f"obs/{k}", k)
                    image_keys.append(k)
                else:
                    skipped[k] = reason
            if not state_keys and not image_keys:
                why = "; ".join(f"{k}: {r}" for k, r in sorted(skipped.items()))
                fix = "drop --no-images" if not images else "store low-dimensional state keys or uint8 (T, H, W, C) images"
                _fail(f"{ew}, field 'obs': every observation key is an image, and none can be imported ({why}); {fix}")
        for k in demo["obs"]:
            if k not in state_keys and k not in image_keys and k not in skipped and demo["obs"][k].ndim > 2:
                skipped[k] = "not in the first demo"

        obs = _robomimic_state(demo, "obs", state_keys, state_dims, T, ew)
        imgs, finals = _robomimic_images(demo, image_keys, image_shapes, T, ew)
        _check_finite(ew, "actions", actions)
        _check_finite(ew, "rewards", rewards)
        terminal = bool(dones[-1]) and bool(rewards[-1] > 0)
        if "next_obs" in demo:
            ep = _episode(obs, _robomimic_state(demo, "next_obs", state_keys, state_dims, T, ew), actions, rewards, terminal, source)
            ep["images"], ep["final_images"] = imgs, finals
            episodes.append(ep)
            continue
        ep = _episode_without_next(obs, actions, rewards, terminal, source, imgs)
        if not terminal:
            dropped[0] += 1
            dropped[2] += int(rewards[-1] > 0)
        elif image_keys:
            repeated_final += 1
        if ep is None:
            dropped[1] += 1
        else:
            episodes.append(ep)
    if image_keys:
        shapes = ", ".join(f"{k} {image_shapes[k]}" for k in image_keys)
        notes.append(f"image observation keys imported as uint8 (H, W, C) images: {shapes}")
    if repeated_final:
        notes.append(f"no 'next_obs': the final image of {repeated_final} terminal episode(s) repeats its last obs image "
                     "(a placeholder, like its next observation: a terminal step is not bootstrapped)")
    if skipped:
        notes.append(f"skipped image observation keys (arrays with ndim > 2): "
                     f"{', '.join(f'{k} ({r})' for k, r in sorted(skipped.items()))}")
    if state_keys:
        notes.append(f"state = obs keys flattened in sorted order: {', '.join(state_keys)}")
    else:
        notes.append("state: empty (every obs key is an image); the model reads the images only")
    notes += _drop_note(*dropped, "next_obs")
    low = high = None
    if episodes:
        low, high = _bounds_from_data(np.concatenate([ep["actions"] for ep in episodes]), notes)
    return ImportResult(_build(episodes, low, high, where, env_id), notes)


# -- Minari -------------------------------------------------------------------------------------


def _obs_leaves(space, prefix: str, where: str, leaves: list, images: dict, skipped: dict, want_images: bool = True) -> None:
    """Key paths of the Boxes in `space`, Dict keys in sorted order: state leaves (ndim <= 1 per step) into
    `leaves`; uint8 (H, W, C) Dict leaves into `images` {path: (H, W, C)}; other image-like leaves into
    `skipped` {path: why}."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        for k in sorted(space.spaces):
            _obs_leaves(space.spaces[k], f"{prefix}/{k}" if prefix else k, where, leaves, images, skipped, want_images)
    elif isinstance(space, gym.spaces.Box):
        if len(space.shape) <= 1:
            leaves.append(prefix)
            return
        reason = _image_like_reason(space.dtype, tuple(space.shape))
        if not prefix:
            reason = "the observation space is a Box, not a Dict holding images"
        elif reason is None and not want_images:
            reason = "--no-images"
        if reason is None:
            images[prefix] = tuple(int(x) for x in space.shape)
        else:
            skipped[prefix] = reason
    else:
        name = f"observations/{prefix}" if prefix else "observations"
        _fail(f"{where}, field '{name}': space {space} is not supported; observations must be a Box or a Dict of Boxes")


def _leaf_space(space, path: str):
    for k in path.split("/") if path else []:
        space = space.spaces[k]
    return space


def _leaf(obs, path: str):
    for k in path.split("/") if path else []:
        obs = obs[k]
    return obs


def _image_keys(paths, where: str) -> dict[str, str]:
    """{leaf path: image key}: '/' becomes '.'; a key that cannot name a file, or two paths giving one key, fail."""
    keys: dict[str, str] = {}
    for p in paths:
        key = p.replace("/", ".")
        _check_image_key(where, f"observations/{p}", key)
        other = next((q for q, k in keys.items() if k == key), None)
        if other is not None:
            _fail(f"{where}, field 'observations/{p}': its image key '{key}' is also the key of 'observations/{other}' "
                  "('/' becomes '.'); rename one of them in the source, or pass --no-images")
        keys[p] = key
    return keys


def read_minari(dataset_id: str, env_id: Optional[str] = None, source: Optional[str] = None, images: bool = True) -> ImportResult:
    """A Minari dataset, found by id under MINARI_DATASETS_PATH (default ~/.minari/datasets).

    Dict observation leaves that are uint8 Boxes of shape (H, W, C) become image observations (key: the
    leaf path with '/' replaced by '.'; unless `images` is False); other leaves with ndim > 1 are skipped."""
    try:
        import gymnasium as gym
        import minari
    except ImportError as exc:
        raise ImportSourceError(f"importing Minari datasets needs minari, which is not installed; {INSTALL_HINT}") from exc
    source = source or DEFAULT_SOURCE["minari"]
    root = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
    where = f"minari dataset '{dataset_id}'"
    try:
        mds = minari.load_dataset(str(dataset_id))
    except FileNotFoundError as exc:
        raise ImportSourceError(
            f"{where}: not found under {root}; set MINARI_DATASETS_PATH to the folder that holds it, "
            f"or download it with `minari download {dataset_id}`"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - corrupted files or a malformed id
        raise ImportSourceError(f"{where}: cannot load ({type(exc).__name__}: {exc}); check the id, and that its files under {root} are complete") from exc
    notes: list[str] = []
    try:
        obs_space, act_space = mds.observation_space, mds.action_space
        spec = mds.env_spec
    except Exception as exc:  # noqa: BLE001
        raise ImportSourceError(f"{where}: cannot read its metadata ({type(exc).__name__}: {exc}); the dataset is corrupted") from exc
    if not isinstance(act_space, gym.spaces.Box):
        _fail(f"{where}, field 'actions': action space {act_space} is not a Box; Q-Transformer needs continuous actions")
    leaves: list[str] = []
    image_shapes: dict[str, tuple] = {}
    skipped: dict[str, str] = {}
    _obs_leaves(obs_space, "", where, leaves, image_shapes, skipped, images)
    image_keys = _image_keys(image_shapes, where)
    if skipped:
        listed = ", ".join(f"{p or '<observation>'} ({r})" for p, r in skipped.items())
        notes.append(f"skipped image observation keys (ndim > 1 per step): {listed}")
    if not leaves and not image_shapes:
        fix = "drop --no-images" if not images else "store low-dimensional states or uint8 (H, W, C) images in a Dict observation"
        _fail(f"{where}, field 'observations': every observation is an image, and none can be imported; {fix}")
    if image_shapes:
        notes.append("image observation keys imported as uint8 (H, W, C) images: "
                     + ", ".join(f"{image_keys[p]} {shape}" + (f" (from '{p}')" if image_keys[p] != p else "") for p, shape in image_shapes.items()))
        if getattr(getattr(mds, "storage", None), "jpeg_encoding", False):
            try:
                from minari.dataset.minari_storage import is_image_space

                lossy = [image_keys[p] for p in image_shapes if is_image_space(_leaf_space(obs_space, p))]
            except Exception:  # noqa: BLE001 - another minari version: say nothing
                lossy = []
            if lossy:
                notes.append(f"Minari stored images {', '.join(lossy)} JPEG-encoded: the imported images are the decoded (lossy) frames")
    if isinstance(obs_space, gym.spaces.Dict):
        if leaves:
            notes.append(f"state = Dict observation keys flattened in sorted order: {', '.join(leaves)}")
        else:
            notes.append("state: empty (every observation key is an image); the model reads the images only")

    episodes = []
    try:
        for e, ep in enumerate(mds.iterate_episodes()):
            ew = f"{where}: episode {e} (id {ep.id})"
            actions = _numeric(ew, "actions", ep.actions)
            T = actions.shape[0] if actions.ndim else 0
            if T == 0:
                _fail(f"{ew}, field 'actions': the episode is empty; drop it")
            actions = actions.reshape(T, -1)
            parts = []
            for p in leaves:
                name = f"observations/{p}" if p else "observations"
                arr = _numeric(ew, name, _leaf(ep.observations, p))
                if arr.shape[0] != T + 1:
                    _fail(f"{ew}, field '{name}': {arr.shape[0]} rows but {T} actions; Minari stores one more observation than actions")
                arr = arr.reshape(T + 1, -1)
                _check_finite(ew, name, arr)
                parts.append(arr)
            all_obs = np.concatenate([np.zeros((T + 1, 0), np.float32), *parts], axis=1)
            imgs = {}
            for p, shape in image_shapes.items():
                name = f"observations/{p}"
                arr = np.asarray(_leaf(ep.observations, p))
                if arr.dtype != np.uint8 or arr.shape != (T + 1, *shape):
                    _fail(f"{ew}, field '{name}': dtype {arr.dtype}, shape {arr.shape}, but the observation space says uint8 "
                          f"{(T + 1, *shape)} (one more observation than actions); the dataset is corrupted, or pass --no-images")
                imgs[image_keys[p]] = arr
            rewards = _per_step(ew, "rewards", ep.rewards)
            terms = _per_step(ew, "terminations", ep.terminations).astype(bool)
            truncs = _per_step(ew, "truncations", ep.truncations).astype(bool)
            for k, arr in (("rewards", rewards), ("terminations", terms), ("truncations", truncs)):
                if arr.shape[0] != T:
                    _fail(f"{ew}, field '{k}': {arr.shape[0]} steps but 'actions' has {T}; every per-step array needs one row per step")
            _check_finite(ew, "actions", actions)
            _check_finite(ew, "rewards", rewards)
            inner = (terms | truncs)[:-1]
            if inner.any():
                t = int(np.argmax(inner))
                _fail(f"{ew}, step {t}, field 'terminations'/'truncations': set before the episode's last step; split the episode there")
            if not (terms[-1] or truncs[-1]):
                notes.append(f"episode {e} ends with neither termination nor truncation: imported as a timeout")
            episode = _episode(all_obs[:-1], all_obs[1:], actions, rewards, bool(terms[-1]), source)
            episode["images"] = {k: v[:-1] for k, v in imgs.items()}  # (T, H, W, C): the image at each step
            episode["final_images"] = {k: v[-1] for k, v in imgs.items()}  # observation T: after the last step
            episodes.append(episode)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupted episode data
        raise ImportSourceError(f"{where}: cannot read its episodes ({type(exc).__name__}: {exc}); the dataset is truncated or corrupted") from exc
    if not episodes:
        _fail(f"{where}: holds no episodes; add some episodes")

    d = episodes[0]["actions"].shape[1]
    low, high = np.asarray(act_space.low, np.float64).reshape(-1), np.asarray(act_space.high, np.float64).reshape(-1)
    if low.shape == (d,) and np.isfinite(low).all() and np.isfinite(high).all() and np.all(high > low):
        notes.append("action bounds taken from the dataset's action space")
    else:
        low, high = _bounds_from_data(np.concatenate([ep["actions"] for ep in episodes]), notes)
    if env_id is None and spec is not None:
        env_id = getattr(spec, "id", None)
    return ImportResult(_build(episodes, low, high, where, env_id), notes)


# -- entry point --------------------------------------------------------------------------------

READERS = {"d4rl": read_d4rl, "robomimic": read_robomimic, "minari": read_minari}


def import_dataset(
    source, fmt: str, out, env_id: Optional[str] = None, source_label: Optional[str] = None, images: bool = True
) -> ImportResult:
    """Read `source` in format `fmt` and save it as a dataset folder at `out` (nothing written on failure).
    `images=False` skips image observations (robomimic, Minari; D4RL files hold none)."""
    if fmt not in READERS:
        raise ImportSourceError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    extra = {} if fmt == "d4rl" else {"images": images}
    result = READERS[fmt](source, env_id=env_id, source=source_label, **extra)
    result.dataset.save(Path(out))
    return result


__all__ = ["FORMATS", "ImportResult", "ImportSourceError", "import_dataset", "read_d4rl", "read_minari", "read_robomimic"]
