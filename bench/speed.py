"""Speed benchmark: machine peak, training step throughput, decoding latency. Prints a table, writes JSON.

    python -m bench.speed [--quick] [--out bench/results/speed.json]

Every figure is measured in this one run, and speeds are reported beside a baseline from the same run
(matmul peak for training, uncached decoding for the KV cache), because shared machines are noisy.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from qtransformer.algo import QTransformerLearner
from qtransformer.config import preset
from qtransformer.nets import QTransformerNet
from qtransformer.policy import decode


def timeit(fn, min_seconds: float, warmup: int = 3) -> float:
    """Median seconds per call over repeats lasting at least min_seconds in all."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def matmul_peak(dtype: torch.dtype, n: int, seconds: float) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / timeit(lambda: a @ b, seconds)


def model_flops_per_step(net: QTransformerNet, batch: int) -> float:
    """Matmul FLOPs of one training step: online forward + backward (3x) on P+d tokens, target forward on
    P+d tokens, target prefix pass on P+1 tokens. Embedding look-ups and attention scores are left out."""
    per_token_block = sum(2 * p.numel() for n, p in net.transformer.named_parameters() if p.dim() == 2)
    head = 2 * net.head.weight.numel()
    enc = sum(2 * p.numel() for p in net.encoder.mlp.parameters() if p.dim() == 2)
    P, d = net.num_prefix, net.action_dim
    full = batch * ((P + d) * per_token_block + d * head + enc)
    prefix = batch * ((P + 1) * per_token_block + head + enc)
    return 3 * full + full + prefix


def bench_training(name: str, cfg_name: str, obs_dim: int, action_dim: int, amp: bool, seconds: float) -> dict:
    cfg = preset(cfg_name)
    torch.manual_seed(0)
    net = QTransformerNet(obs_dim, action_dim, cfg.algo.num_bins, 1, cfg.model)
    learner = QTransformerLearner(net, cfg.algo, "cpu", amp_bf16=amp)
    B, K = cfg.batch_size, cfg.algo.num_bins
    g = torch.Generator().manual_seed(0)
    batch = {
        "obs": torch.randn(B, obs_dim, generator=g),
        "bins": torch.randint(K, (B, action_dim), generator=g),
        "reward": torch.rand(B, generator=g),
        "discount": torch.full((B,), cfg.algo.gamma),
        "bootstrap": torch.ones(B),
        "next_obs": torch.randn(B, obs_dim, generator=g),
        "mc_return": torch.rand(B, generator=g),
    }
    sec = timeit(lambda: learner.update(batch), seconds)
    flops = model_flops_per_step(net, B)
    return {"name": name, "preset": cfg_name, "bf16": amp, "batch": B, "bins": K, "d": action_dim,
            "steps_per_s": 1 / sec, "samples_per_s": B / sec, "model_gflops_per_s": flops / sec / 1e9}


def bench_decoding(action_dim: int, batch: int, cache: bool, seconds: float) -> dict:
    cfg = preset("default")
    torch.manual_seed(0)
    net = QTransformerNet(39, action_dim, 256, 1, cfg.model).eval()
    obs = torch.randn(batch, 39)
    sec = timeit(lambda: decode(net, obs, use_cache=cache), seconds)
    return {"d": action_dim, "batch": batch, "kv_cache": cache, "ms_per_action_batch": sec * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timings (noisier)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/speed.json"))
    args = parser.parse_args()
    s = 1.0 if args.quick else 3.0

    peak32 = matmul_peak(torch.float32, 1024, s)
    peak16 = matmul_peak(torch.bfloat16, 1024, s)
    training = [
        bench_training("builtin fp32", "builtin", 6, 3, False, s),
        bench_training("default fp32", "default", 39, 4, False, s),
        bench_training("default bf16", "default", 39, 4, True, s),
    ]
    for row in training:
        row["fraction_of_fp32_peak"] = row["model_gflops_per_s"] * 1e9 / peak32
    decoding = [bench_decoding(d, b, c, s / 2) for d in (4, 7) for b in (1, 64) for c in (True, False)]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"matmul peak (1024^3): fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s\n")
    print("| training | batch | K | d | steps/s | samples/s | model GFLOP/s | of fp32 peak |")
    print("|---|---|---|---|---|---|---|---|")
    for r in training:
        print(f"| {r['name']} | {r['batch']} | {r['bins']} | {r['d']} | {r['steps_per_s']:.1f} | {r['samples_per_s']:.0f} | "
              f"{r['model_gflops_per_s']:.1f} | {r['fraction_of_fp32_peak']:.1%} |")
    fp32 = next(r for r in training if r["name"] == "default fp32")["steps_per_s"]
    bf16 = next(r for r in training if r["name"] == "default bf16")["steps_per_s"]
    print(f"\nbf16 / fp32 training speed (default preset): {bf16 / fp32:.2f}x\n")
    print("| decoding (default model, K=256) | batch | KV cache | ms per call | speed-up of the cache |")
    print("|---|---|---|---|---|")
    for r in decoding:
        base = next(x for x in decoding if x["d"] == r["d"] and x["batch"] == r["batch"] and not x["kv_cache"])
        print(f"| d={r['d']} | {r['batch']} | {'yes' if r['kv_cache'] else 'no'} | {r['ms_per_action_batch']:.2f} | "
              f"{base['ms_per_action_batch'] / r['ms_per_action_batch']:.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "matmul_peak_gflops": {"fp32": peak32 / 1e9, "bf16": peak16 / 1e9},
        "training": training, "bf16_over_fp32": bf16 / fp32, "decoding": decoding,
    }, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
