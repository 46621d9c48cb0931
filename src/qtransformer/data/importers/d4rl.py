"""D4RL: flat per-step arrays in one .npz or .hdf5 file (see docs/dataset_format.md, "Importing")."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .common import (
    DEFAULT_SOURCE,
    ImportResult,
    ImportSourceError,
    _bounds_from_data,
    _build,
    _check_bounds,
    _drop_note,
    _episode,
    _episode_without_next,
    _fail,
    _first_bad_row,
    _h5py,
    _numeric,
    _per_step,
)

D4RL_REQUIRED = ("observations", "actions", "rewards", "terminals", "timeouts")
D4RL_OPTIONAL = ("next_observations", "action_low", "action_high")


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
