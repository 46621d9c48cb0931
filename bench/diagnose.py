"""Look inside a trained Q-Transformer: are its values calibrated on the data, and where does greedy
decoding leave the data?

    python -m bench.diagnose RUN_OR_MODEL_DIR --dataset DATASET [--out FILE.json]

For every step of the dataset it runs the teacher-forced pass on the data's own action bins and
reports, per group of episodes (demonstrations, successful and failed autonomous episodes):

- the discounted Monte-Carlo return-to-go G of the step (what the Monte-Carlo bound holds up);
- Q(s, a_data) at the last dimension, and its correlation with G (value calibration);
- V(s) = max over the first dimension's bins, the value greedy decoding starts from;
- per dimension, the value of the data bin, the best bin, and the mean over the K-1 unseen bins (the
  conservative term pushes those to 0), and how often the greedy bin is the data bin or its neighbour.

Prints a table and writes JSON. Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from qtransformer.checkpoint import load_model
from qtransformer.data import EpisodeStore
from qtransformer.data.returns import chunk_actions, returns_to_go


@torch.inference_mode()
def teacher_forced_values(net, obs: np.ndarray, bins: np.ndarray, task: np.ndarray, batch: int = 4096) -> np.ndarray:
    """(N, obs_dim), (N, d), (N,) -> (N, d, K) values, in batches."""
    out = []
    for i in range(0, len(obs), batch):
        t = torch.from_numpy(task[i : i + batch]) if net.task_embedding is not None else None
        out.append(net(torch.from_numpy(obs[i : i + batch]), torch.from_numpy(bins[i : i + batch]), t).numpy())
    return np.concatenate(out)


def episode_sample(lengths: np.ndarray, max_steps: int, seed: int = 0) -> np.ndarray:
    """A step mask (N,) over whole episodes drawn at random (seeded) until they hold >= max_steps steps
    (every step when max_steps <= 0 or the data is smaller)."""
    n = int(lengths.sum())
    if max_steps <= 0 or max_steps >= n:
        return np.ones(n, bool)
    order = np.random.default_rng(seed).permutation(len(lengths))
    chosen = order[: int(np.searchsorted(np.cumsum(lengths[order]), max_steps)) + 1]
    keep = np.zeros(len(lengths), bool)
    keep[chosen] = True
    return np.repeat(keep, lengths)


def diagnose(model_dir: Path, dataset: Path, max_steps: int = 0) -> dict:
    net, disc, meta = load_model(model_dir)
    net.eval()
    gamma = meta.get("algo", {}).get("gamma", 0.98)
    ds = EpisodeStore.open(dataset).to_dataset()
    lengths = np.diff(ds.episode_starts)  # (E,); episode_starts holds E+1 offsets
    G = returns_to_go(ds.rewards.astype(np.float64), ds.episode_starts, gamma)  # (N,) on whole episodes
    keep = episode_sample(lengths, max_steps)  # (N,): the steps looked at (the values take N x d x K floats)
    h = int(meta.get("algo", {}).get("action_chunk", 1))  # a chunked model's action is the data's next h actions
    actions = chunk_actions(ds.actions, ds.episode_starts, h)  # (N, h*d), as training encodes them
    bins = disc.encode(actions[keep]).astype(np.int64)  # (n, d) (d = h x the data's action dimensions)
    task = ds.step_task()[keep]
    values = teacher_forced_values(net, ds.observations[keep].astype(np.float32), bins, task)  # (n, d, K)
    N, d, K = values.shape
    G = G[keep]
    data_v = np.take_along_axis(values, bins[:, :, None], axis=2)[:, :, 0]  # (N, d)
    best_v = values.max(axis=2)  # (N, d)
    unseen_v = (values.sum(axis=2) - data_v) / (K - 1)  # (N, d)
    greedy_is_data = values.argmax(axis=2) == bins  # (N, d)
    greedy_near_data = np.abs(values.argmax(axis=2) - bins) <= 1  # (N, d): the data bin or a neighbour

    success = np.repeat(ds.episode_success(), lengths)[keep]
    source = np.repeat(np.array(ds.episode_source), lengths)[keep]
    groups = {
        "demonstration": source == "demonstration",
        "autonomous, success": (source != "demonstration") & success,
        "autonomous, failure": (source != "demonstration") & ~success,
    }
    report = {"model": str(model_dir), "dataset": str(dataset), "gamma": gamma, "steps_looked_at": int(N), "groups": {}}
    for name, m in groups.items():
        if not m.any():
            continue
        q_last = data_v[m, -1]
        report["groups"][name] = {
            "steps": int(m.sum()),
            "G": float(G[m].mean()),
            "Q_data_last": float(q_last.mean()),
            "corr_Q_G": float(np.corrcoef(q_last, G[m])[0, 1]) if G[m].std() > 0 and q_last.std() > 0 else float("nan"),
            "V": float(best_v[m, 0].mean()),
            "per_dim": [
                {
                    "data": float(data_v[m, i].mean()), "best": float(best_v[m, i].mean()),
                    "unseen": float(unseen_v[m, i].mean()), "greedy_is_data": float(greedy_is_data[m, i].mean()),
                    "greedy_within_one_bin": float(greedy_near_data[m, i].mean()),
                }
                for i in range(d)
            ],
        }
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="run folder, checkpoint or model folder")
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--max-steps", type=int, default=0, help="look at whole random episodes holding about this many steps (0: all)")
    a = p.parse_args()
    r = diagnose(a.model, a.dataset, a.max_steps)
    print(f"{r['model']} on {r['dataset']} (gamma {r['gamma']})")
    print("| group | steps | G (MC return) | Q(s, a_data), last dim | corr(Q, G) | V(s) = max Q(s, a1) |")
    print("|---|---|---|---|---|---|")
    for name, g in r["groups"].items():
        print(f"| {name} | {g['steps']} | {g['G']:.3f} | {g['Q_data_last']:.3f} | {g['corr_Q_G']:.2f} | {g['V']:.3f} |")
    print("\nper dimension: value of the data bin / best bin / mean unseen bin; greedy bin = data bin, within one bin of it")
    for name, g in r["groups"].items():
        cells = "  ".join(
            f"d{i + 1} {x['data']:.2f}/{x['best']:.2f}/{x['unseen']:.2f} {x['greedy_is_data']:.0%},{x['greedy_within_one_bin']:.0%}"
            for i, x in enumerate(g["per_dim"])
        )
        print(f"  {name:<22} {cells}")
    if a.out:
        a.out.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
