"""How much will the conservative term shrink the values of the data's own bins on this dataset?

    python -m bench.bin_spread DATASET [DATASET ...] [--bins 16 256] [--neighbours 32] [--queries 300] [--out FILE.json]

Q-Transformer pushes every bin the data did not take towards 0 with a per-bin weight w = alpha/(N-1)
(N = K: the paper's; N = 16: the `default` preset, algo.conservative_bins). At a state where the data
takes a bin with probability p, the TD term (weight p) and the push (weight (1-p) w) balance at
Q* = p y / (p + (1-p) w) (algo/losses.py, `conservative_fixed_point`). So what matters is p: how often
the data's actions near a state fall into one bin. Actions that saturate at their bounds or come from
a near-deterministic expert concentrate in a few bins (p large); noisy continuous actions cut into
K = 256 bins spread over many (p small), and their values shrink.

p is estimated without training anything: for random query steps, the fraction of their nearest
neighbours (in the normalised observation space, among up to --database steps) whose bin equals the
query's, per action dimension. The table gives mean p and the mean predicted Q*/y for the default's and
the paper's per-bin weights. A rough, tabular estimate (the network generalises over a region whose
size this does not know), to compare datasets and settings, not a prediction of success.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from qtransformer.actions import ActionDiscretizer
from qtransformer.algo.losses import conservative_fixed_point
from qtransformer.data import EpisodeStore


def same_bin_rates(obs: np.ndarray, bins: np.ndarray, neighbours: int, queries: int, database: int, seed: int = 0) -> np.ndarray:
    """(q, d): per query step and dimension, the fraction of its `neighbours` nearest steps (squared
    Euclidean distance on observations standardised per feature) that took the same bin."""
    rng = np.random.default_rng(seed)
    x = ((obs - obs.mean(0)) / (obs.std(0) + 1e-6)).astype(np.float32)  # (N, obs_dim)
    base = rng.choice(len(x), min(database, len(x)), replace=False)
    picked = rng.choice(len(base), min(queries, len(base)), replace=False)
    X, B = x[base], bins[base]
    norms = np.square(X).sum(1)
    rates = []
    for j in picked:
        dist = norms - 2.0 * X @ X[j]  # (n,) up to the query's own norm, which does not change the order
        dist[j] = np.inf  # not itself
        nn = np.argpartition(dist, neighbours)[:neighbours]
        rates.append((B[nn] == B[j]).mean(0))
    return np.asarray(rates)  # (q, d)


def spread(dataset: Path, num_bins: int, neighbours: int, queries: int, database: int, reference_bins: int = 16, alpha: float = 1.0) -> dict:
    store = EpisodeStore.open(dataset)
    obs = np.concatenate([np.asarray(c.observations) for c in store.chunks])
    actions = np.concatenate([np.asarray(c.actions) for c in store.chunks])
    bins = ActionDiscretizer(store.action_low, store.action_high, num_bins).encode(actions)
    p = same_bin_rates(obs, bins, neighbours, queries, database)
    out = {"dataset": str(dataset), "steps": int(len(obs)), "num_bins": num_bins, "p_same_bin": p.mean(0).tolist()}
    for name, n in (("default", reference_bins), ("paper", num_bins)):
        w = alpha / (n - 1)
        out[f"q_over_y_{name}"] = float(conservative_fixed_point(p, w).mean())
        out[f"w_{name}"] = w
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("datasets", type=Path, nargs="+")
    ap.add_argument("--bins", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--neighbours", type=int, default=32)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--database", type=int, default=200_000, help="neighbours are searched among at most this many random steps")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = [spread(d, k, args.neighbours, args.queries, args.database) for d in args.datasets for k in args.bins]
    print("| dataset | steps | K | p(same bin) per dimension | Q*/y, default (w = 1/15) | Q*/y, paper (w = 1/(K-1)) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        p = ", ".join(f"{x:.3f}" for x in r["p_same_bin"])
        print(f"| {Path(r['dataset']).name} | {r['steps']} | {r['num_bins']} | {p} | {r['q_over_y_default']:.2f} | {r['q_over_y_paper']:.2f} |")
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
