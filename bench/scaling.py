"""Data-parallel scaling on paper, and a 1- against 2-process check. Prints markdown tables, writes JSON.

    python -m bench.scaling [--measure] [--steps 200] [--out bench/results/scaling.json]

The table: for the `default` and `large` presets (39-d state, 4-d actions, 256 bins, one task, as in
bench.speed), the parameter count (the project's own `parameter_count`), the bytes of the fp32 gradient
that DistributedDataParallel all-reduces every step, what a ring all-reduce sends per rank, and the
matmul FLOPs of a step (bench.speed's count) and per rank, for the preset's batch 256 split W ways
(strong scaling) and for 256 per rank (weak scaling).

--measure trains the built-in task's data (`builtin` preset, the preset's batch 256 as the global
batch, no evaluation, one thread per process) as 1 process and as 2 gloo processes under torchrun,
and prints the largest absolute difference of every network's parameters after --steps steps. Wall
times are printed as a note only: 2 processes on a shared 2-core machine say nothing about scaling.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.speed import model_flops_per_step
from qtransformer.config import preset
from qtransformer.nets import QTransformerNet, parameter_count

OBS_DIM, ACTION_DIM = 39, 4


SETUPS = ((2, 256), (8, 256), (8, 2048), (64, 16384))  # (world size W, global batch): 256 split W ways, or 256 per rank


def scaling_rows(setups=SETUPS) -> list[dict]:
    rows = []
    for name in ("default", "large"):
        cfg = preset(name)
        n = parameter_count(OBS_DIM, ACTION_DIM, cfg.algo.num_bins, 1, cfg.model)
        with torch.device("meta"):
            net = QTransformerNet(OBS_DIM, ACTION_DIM, cfg.algo.num_bins, 1, cfg.model)
        grad_bytes = 4 * n
        for w, batch in setups:
            flops = model_flops_per_step(net, batch)
            ring = 2 * (w - 1) / w * grad_bytes  # reduce-scatter + all-gather: sent (and received) by each rank
            rows.append({"preset": name, "parameters": n, "grad_bytes": grad_bytes, "world_size": w, "global_batch": batch,
                         "batch_per_rank": batch // w, "flops_per_step": flops, "flops_per_rank": flops / w,
                         "ring_bytes_per_rank": ring, "flops_per_byte": flops / w / ring})
    return rows


def print_scaling(rows: list[dict]) -> None:
    print("| preset | parameters | fp32 gradient | W | global batch (per rank) | GFLOP per step | GFLOP per rank | "
          "ring all-reduce sent per rank | FLOP per byte sent |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['parameters']:,} | {r['grad_bytes'] / 2**20:.2f} MiB | {r['world_size']} | {r['global_batch']} "
              f"({r['batch_per_rank']}) | {r['flops_per_step'] / 1e9:.1f} | {r['flops_per_rank'] / 1e9:.2f} | "
              f"{r['ring_bytes_per_rank'] / 2**20:.2f} MiB | {r['flops_per_byte']:,.0f} |")


def train_args(data: Path, out: Path, steps: int) -> list[str]:
    return ["train", "--dataset", str(data), "--out", str(out), "--preset", "builtin", "--steps", str(steps), "--eval-episodes", "0",
            "--save-every", str(steps), "--no-progress", "--device", "cpu", "--threads", "1"]


def measure(steps: int) -> dict:
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        qt = [sys.executable, "-m", "qtransformer"]
        subprocess.run([*qt, "make-dataset", "builtin", "--out", str(tmp / "data")], check=True, env=env, capture_output=True)
        walls = {}
        for name, launcher in (("1 process", qt), ("2 processes", [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                                                                    "--master-port", "29571", "-m", "qtransformer"])):
            start = time.perf_counter()
            subprocess.run([*launcher, *train_args(tmp / "data", tmp / name.replace(" ", "_"), steps)], check=True, env=env, capture_output=True)
            walls[name] = time.perf_counter() - start
        ckpt = f"checkpoints/step_{steps:08d}"
        diffs = {}
        for f in ("training_state/online.safetensors", "training_state/target.safetensors", "training_state/optimizer.safetensors"):
            a, b = load_file(str(tmp / "1_process" / ckpt / f)), load_file(str(tmp / "2_processes" / ckpt / f))
            per = {k: float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()}
            worst = max(per, key=per.get)
            key_bias = {k: v for k, v in per.items() if k.endswith("attn.qkv.bias")}
            diffs[f] = {"max_abs": per[worst], "at": worst, "max_abs_without_qkv_bias": max(v for k, v in per.items() if k not in key_bias)}
    return {"steps": steps, "preset": "builtin", "wall_s": walls, "max_abs_difference": diffs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="also train 1 against 2 processes and compare the parameters")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/scaling.json"))
    args = parser.parse_args()
    rows = scaling_rows()
    print_scaling(rows)
    result = {"scaling": rows}
    if args.measure:
        m = measure(args.steps)
        result["measured"] = m
        print(f"\n1 against 2 gloo processes, preset builtin, global batch 256, {m['steps']} steps:")
        for f, d in m["max_abs_difference"].items():
            print(f"  {f}: max abs difference {d['max_abs']:.2e} (at {d['at']}); without the attention qkv bias {d['max_abs_without_qkv_bias']:.2e}")
        print("  wall (a note only, shared 2-core machine): " + ", ".join(f"{k} {v:.1f} s" for k, v in m["wall_s"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
