"""Sampling benchmark: transitions per second the sampler delivers from a large on-disk dataset, beside
what a training step consumes, and resident memory. Prints a table, writes JSON.

    python -m bench.sampling [--steps 1000000] [--obs-dim 39] [--image 64] [--frames 6] [--out bench/results/sampling.json]

The dataset is written by a separate process into a temporary folder (about steps * (obs_dim * 8 +
image^2 * 3) bytes) and removed after, so the resident memory reported is the reader's alone.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qtransformer.actions import ActionDiscretizer
from qtransformer.algo import QTransformerLearner
from qtransformer.config import preset
from qtransformer.data import EpisodeDataset, EpisodeStore, TransitionSampler, build_transitions
from qtransformer.nets import QTransformerNet


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_store(path: Path, steps: int, obs_dim: int, d: int, episode_len: int, chunk: int, image: int = 0) -> EpisodeStore:
    rng = np.random.default_rng(0)
    store = None
    for start in range(0, steps, chunk):
        n = min(chunk, steps - start)
        E = n // episode_len
        T = E * episode_len
        obs = rng.standard_normal((T, obs_dim), dtype=np.float32)
        ends = np.zeros(T, bool)
        ends[episode_len - 1 :: episode_len] = True
        ds = EpisodeDataset(
            observations=obs, next_observations=np.roll(obs, -1, axis=0), actions=rng.uniform(-1, 1, (T, d)).astype(np.float32),
            rewards=np.zeros(T, np.float32), terminals=np.zeros(T, bool), timeouts=ends,
            episode_starts=np.arange(0, T + 1, episode_len, dtype=np.int64), episode_task=np.zeros(E, np.int64),
            episode_source=["autonomous"] * E, action_low=-np.ones(d, np.float32), action_high=np.ones(d, np.float32),
        )
        if image:
            ds.images = {"cam": np.broadcast_to((np.arange(T) % 251).astype(np.uint8)[:, None, None, None], (T, image, image, 3)).copy()}
            ds.final_images = {"cam": np.zeros((E, image, image, 3), np.uint8)}
        store = EpisodeStore.create(path, ds) if store is None else store.append(ds)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--obs-dim", type=int, default=39)
    parser.add_argument("--action-dim", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--image", type=int, default=0, help="add one HxWx3 uint8 camera of this size (0: state only)")
    parser.add_argument("--frames", type=int, default=1, help="frame windows of this length per camera (--model.frames; with --image)")
    parser.add_argument("--write-only", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("bench/results/sampling.json"))
    args = parser.parse_args()

    if args.write_only is not None:
        make_store(args.write_only, args.steps, args.obs_dim, args.action_dim, episode_len=50, chunk=100_000, image=args.image)
        return
    tmp = Path(tempfile.mkdtemp(prefix="qt-bench-"))
    try:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "bench.sampling", "--write-only", str(tmp / "d"), "--steps", str(args.steps),
               "--obs-dim", str(args.obs_dim), "--action-dim", str(args.action_dim), "--image", str(args.image)]
        subprocess.run(cmd, check=True)
        write_s = time.perf_counter() - t0
        rss_before = rss_mib()
        store = EpisodeStore.open(tmp / "d")
        cfg = preset("default")
        frames = args.frames if args.image else 1
        cfg.model.frames = frames
        t0 = time.perf_counter()
        tr = build_transitions(store, ActionDiscretizer(store.action_low, store.action_high, cfg.algo.num_bins), cfg.algo.gamma, cfg.algo.n_step)
        build_s = time.perf_counter() - t0
        rows = []
        for prefetch in (0, 4):
            sampler = TransitionSampler(tr, cfg.batch_size, "cpu", seed=0, prefetch=prefetch, frames=frames)
            sampler.sample()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                sampler.sample()
                n += 1
            sec = time.perf_counter() - t0
            sampler.close()
            rows.append({"prefetch": prefetch, "samples_per_s": n * cfg.batch_size / sec})
        # what one default training step consumes, same run
        net = QTransformerNet(args.obs_dim, args.action_dim, cfg.algo.num_bins, 1, cfg.model, store.image_shapes)
        learner = QTransformerLearner(net, cfg.algo, "cpu")
        sampler = TransitionSampler(tr, cfg.batch_size, "cpu", seed=0, frames=frames)
        batch = sampler.sample()
        learner.update(batch)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            learner.update(batch)
            n += 1
        train_samples = n * cfg.batch_size / (time.perf_counter() - t0)
        sampler.close()
        disk_mib = store.size_on_disk() / 2**20
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    cams = f" + {args.image}x{args.image}x3 uint8 image" + (f", windows of {args.frames} frames" if args.frames > 1 else "") if args.image else ""
    print(f"dataset: {args.steps:,} transitions, obs {args.obs_dim} float32{cams}, {disk_mib:.0f} MiB on disk, "
          f"written in {write_s:.1f} s; per-step quantities built in {build_s:.1f} s\n")
    print("| sampler | samples/s | / training consumption |")
    print("|---|---|---|")
    for r in rows:
        print(f"| prefetch {r['prefetch']} | {r['samples_per_s']:,.0f} | {r['samples_per_s'] / train_samples:.1f}x |")
    print(f"| training step (default preset, batch {cfg.batch_size}) | {train_samples:,.0f} | 1.0x |")
    print(f"\nresident memory: {rss_before:.0f} MiB before opening, peak {peak:.0f} MiB (dataset {disk_mib:.0f} MiB on disk)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "steps": args.steps, "obs_dim": args.obs_dim, "image": args.image, "frames": args.frames, "disk_mib": disk_mib, "write_s": write_s, "build_s": build_s,
        "sampler": rows, "train_samples_per_s": train_samples, "rss_before_mib": rss_before, "peak_rss_mib": peak,
    }, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
