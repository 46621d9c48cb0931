"""d3rlpy's algorithms as peers in our benchmarks: one of our datasets as a d3rlpy MDPDataset, an
algorithm built at stated settings, and a fit that records a learning curve.

Used by bench.compare (MetaWorld: CQL, IQL, DT), bench.regime and bench.ogbench (IQL, ReBRAC). d3rlpy
comes with the bench extra (`bash scripts/setup.sh --bench`); it is imported only here.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

# The algorithms we run, by the names our benchmarks use.
ALGOS = ("cql", "iql", "dt", "rebrac", "td3bc")


def import_d3rlpy():
    """d3rlpy, imported quietly (it imports the old gym, which prints a notice, and logs every epoch)."""
    import contextlib
    import io
    import logging

    with contextlib.redirect_stderr(io.StringIO()):
        import d3rlpy
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return d3rlpy


def with_task_fn(n_tasks: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(obs (B, obs_dim), task (B,)) -> (B, obs_dim + n_tasks): the task as a one-hot after the observation.
    A single-task dataset gets no extra column."""

    def with_task(obs: np.ndarray, task: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if n_tasks <= 1:
            return obs
        return np.concatenate([obs, np.eye(n_tasks, dtype=np.float32)[task]], axis=1)

    return with_task


def mdp_dataset(d3rlpy, ds, rewards: Optional[np.ndarray] = None):
    """Our EpisodeDataset -> (d3rlpy MDPDataset, with_task). `rewards` (N,) replaces the stored rewards
    (e.g. OGBench's own subtask reward). d3rlpy refuses a step that is both terminal and timeout and
    needs every episode to end in one of them."""
    n_tasks = len(ds.task_names)
    with_task = with_task_fn(n_tasks)
    timeouts = ds.timeouts & ~ds.terminals
    ends = ds.episode_starts[1:] - 1  # (E,) the last step of each episode (episode_starts holds E+1 offsets)
    timeouts[ends] |= ~ds.terminals[ends]
    dataset = d3rlpy.dataset.MDPDataset(
        with_task(ds.observations, ds.step_task()), ds.actions.astype(np.float32),
        (ds.rewards if rewards is None else rewards).astype(np.float32), ds.terminals.astype(np.float32), timeouts.astype(np.float32),
    )
    return dataset, with_task


def make_algo(d3rlpy, method: str, ds, batch_size: int = 256, settings: Optional[dict] = None, device: str = "cpu:0"):
    """One of ALGOS with a standardising observation scaler and the dataset's action bounds; `settings`
    are extra fields of the algorithm's d3rlpy Config (e.g. {"expectile": 0.9})."""
    settings = dict(settings or {})
    hidden = settings.pop("hidden", None)  # [units, ...] of the actor and critic MLPs (d3rlpy's default: [256, 256])
    layer_norm = settings.pop("layer_norm", False)
    nets = {}
    if hidden is not None:
        enc = d3rlpy.models.VectorEncoderFactory(list(hidden), use_layer_norm=layer_norm)
        nets = {"actor_encoder_factory": enc, "critic_encoder_factory": enc}
        if method == "iql":
            nets["value_encoder_factory"] = enc
    scalers = {
        "observation_scaler": d3rlpy.preprocessing.StandardObservationScaler(),
        "action_scaler": d3rlpy.preprocessing.MinMaxActionScaler(minimum=ds.action_low, maximum=ds.action_high),
    }
    if method == "cql":
        config = d3rlpy.algos.CQLConfig(batch_size=batch_size, **nets, **scalers, **settings)
    elif method == "iql":
        config = d3rlpy.algos.IQLConfig(batch_size=batch_size, **nets, **scalers, **settings)
    elif method == "rebrac":
        config = d3rlpy.algos.ReBRACConfig(batch_size=batch_size, **nets, **scalers, **settings)
    elif method == "td3bc":
        config = d3rlpy.algos.TD3PlusBCConfig(batch_size=batch_size, **nets, **scalers, **settings)
    elif method == "dt":  # the DT paper's size (embedding 128, 3 layers, 1 head, context 20); d3rlpy's default embeds at 256
        config = d3rlpy.algos.DecisionTransformerConfig(
            batch_size=64, context_size=20, max_timestep=1000, encoder_factory=d3rlpy.models.VectorEncoderFactory([128]), **scalers, **settings,
        )
    else:
        raise ValueError(f"unknown d3rlpy method '{method}'; choose one of {', '.join(ALGOS)}")
    return config.create(device=device)


def gradient_steps(method: str, steps: int) -> int:
    """One budget for all: the same number of training transitions. The others take 256 transitions a
    step; DT takes 64 sequences of 20, so it gets steps * 256 / 1280 gradient steps."""
    return max(1, steps * 256 // (64 * 20)) if method == "dt" else steps


def fit(d3rlpy, algo, dataset, steps: int, curve_points: int, evaluate: Callable[[], tuple[float, dict]]) -> dict:
    """Train `algo` for `steps` gradient steps, calling `evaluate() -> (success, per_task)` at
    `curve_points` evenly spaced steps (the last at the end). Returns success_rate, per_task, curve
    [[step, success], ...], train_s (without evaluation), wall_s, steps_per_s, gradient_steps."""
    import torch

    every, curve, eval_time = max(1, steps // curve_points), [], 0.0

    def callback(algo_, epoch: int, total_step: int) -> None:
        nonlocal eval_time
        if total_step % every == 0 and total_step < steps:
            t = time.perf_counter()
            curve.append([total_step, evaluate()[0]])
            eval_time += time.perf_counter() - t

    t = time.perf_counter()
    with torch.inference_mode(False):
        algo.fit(
            dataset, n_steps=steps, n_steps_per_epoch=steps, show_progress=False, save_interval=10**9,
            logger_adapter=d3rlpy.logging.NoopAdapterFactory(), callback=callback,
        )
    train_s = time.perf_counter() - t - eval_time
    te = time.perf_counter()
    final, per_task = evaluate()
    eval_time += time.perf_counter() - te
    curve.append([steps, final])
    return {
        "success_rate": final, "per_task": per_task, "curve": curve, "wall_s": train_s + eval_time, "train_s": train_s,
        "steps_per_s": steps / max(train_s, 1e-9), "gradient_steps": steps, "d3rlpy": d3rlpy.__version__,
    }


__all__ = ["ALGOS", "fit", "gradient_steps", "import_d3rlpy", "make_algo", "mdp_dataset", "with_task_fn"]
