"""Speed benchmark: machine peak, training step throughput, decoding latency, peers. Prints a table, writes JSON.

    python -m bench.speed [--quick] [--out bench/results/speed.json] [--peer-python /work/peers/qtpkg/bin/python]

Peers, in the same run: d3rlpy's CQL at the same batch size (when d3rlpy is installed, the bench
extra), and the `q-transformer` package from PyPI through bench/peer_qtransformer.py run by another
interpreter (--peer-python: it needs its own venv, see that script).

Every figure is measured in this one run, and speeds are reported beside a baseline from the same run
(matmul peak for training, uncached decoding for the KV cache), because shared machines are noisy.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from qtransformer.algo import QTransformerLearner
from qtransformer.config import preset
from qtransformer.data import Batch
from qtransformer.nets import QTransformerNet
from qtransformer.policy import decode, greedy_decode


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


def learner_and_batch(cfg_name: str, obs_dim: int, action_dim: int, amp: bool = False, compile: bool = False, device: str = "cpu"):
    """A learner on the preset's network and one random batch of the preset's size (seeded)."""
    cfg = preset(cfg_name)
    torch.manual_seed(0)
    net = QTransformerNet(obs_dim, action_dim, cfg.algo.num_bins, 1, cfg.model)
    learner = QTransformerLearner(net, cfg.algo, device, amp_bf16=amp, compile=compile)
    B, K = cfg.batch_size, cfg.algo.num_bins
    g = torch.Generator().manual_seed(0)
    batch = Batch(
        obs=torch.randn(B, obs_dim, generator=g),
        bins=torch.randint(K, (B, action_dim), generator=g),
        reward=torch.rand(B, generator=g),
        discount=torch.full((B,), cfg.algo.gamma),
        bootstrap=torch.ones(B),
        next_obs=torch.randn(B, obs_dim, generator=g),
        mc_return=torch.rand(B, generator=g),
    )
    return learner, batch.to(torch.device(device))


def alternating_rounds(pair: dict, seconds: float, rounds: int) -> tuple[dict, list[float]]:
    """Time `learner.update(batch)` for the two (learner, batch) entries of `pair` (keys False, True) in
    alternating rounds, the order swapped every round, so that both see the same machine. Returns the
    per-round seconds per step {key: [...]} and the per-round ratios False-time / True-time."""
    per_round: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for key in ((False, True) if r % 2 == 0 else (True, False)):
            learner, batch = pair[key]
            per_round[key].append(timeit(lambda: learner.update(batch), seconds / rounds))  # noqa: B023 - timeit calls it at once
    return per_round, [a / b for a, b in zip(per_round[False], per_round[True], strict=True)]


def bench_compiled_training(cfg_name: str, obs_dim: int, action_dim: int, seconds: float, rounds: int, device: str = "cpu") -> dict:
    """Eager against torch.compile'd training steps (train --compile) on the same preset, timed in
    alternating rounds (alternating_rounds); also the seconds the first compiled step took."""
    pair = {c: learner_and_batch(cfg_name, obs_dim, action_dim, compile=c, device=device) for c in (False, True)}
    learner, batch = pair[True]
    t = time.perf_counter()
    learner.update(batch)  # compiles
    compile_s = time.perf_counter() - t
    per_round, ratios = alternating_rounds(pair, seconds, rounds)
    return {"preset": cfg_name, "device": device, "eager_steps_per_s": 1 / statistics.median(per_round[False]),
            "compiled_steps_per_s": 1 / statistics.median(per_round[True]), "speedup": statistics.median(ratios),
            "speedup_range": [min(ratios), max(ratios)], "compile_s": compile_s}


def print_compiled(rows: list[dict]) -> None:
    print("\n| training step, torch.compile (train --compile) | device | eager steps/s | compiled steps/s | compiled / eager (rounds) | first step (compiling), s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["speedup_range"]
        print(f"| {r['preset']} | {r['device']} | {r['eager_steps_per_s']:.1f} | {r['compiled_steps_per_s']:.1f} | {r['speedup']:.2f}x ({lo:.2f}-{hi:.2f}) | {r['compile_s']:.0f} |")


def bench_training(name: str, cfg_name: str, obs_dim: int, action_dim: int, amp: bool, seconds: float) -> dict:
    learner, batch = learner_and_batch(cfg_name, obs_dim, action_dim, amp)
    return _training_row(name, cfg_name, learner, batch, timeit(lambda: learner.update(batch), seconds))


def bench_training_pair(cfg_name: str, obs_dim: int, action_dim: int, seconds: float, rounds: int) -> tuple[dict, dict, list[float]]:
    """fp32 and bf16 autocast on the same preset, timed in alternating rounds (the order swapped every
    round) so that both see the same machine: the host's speed drifts by 10-30 % over minutes, which
    made separate measurements disagree. Returns the two rows (median over rounds) and the per-round
    bf16/fp32 speed ratios."""
    pair = {amp: learner_and_batch(cfg_name, obs_dim, action_dim, amp) for amp in (False, True)}
    per_round, ratios = alternating_rounds(pair, seconds, rounds)
    rows = tuple(
        _training_row(f"{cfg_name} {'bf16' if amp else 'fp32'}", cfg_name, *pair[amp], statistics.median(per_round[amp]))
        for amp in (False, True)
    )
    return rows[0], rows[1], ratios


def _training_row(name: str, cfg_name: str, learner: QTransformerLearner, batch: Batch, sec: float) -> dict:
    B, K = batch.bins.shape[0], learner.online.num_bins
    flops = model_flops_per_step(learner.online, B)
    return {"name": name, "preset": cfg_name, "bf16": learner.amp_bf16, "batch": B, "bins": K, "d": batch.bins.shape[1],
            "steps_per_s": 1 / sec, "samples_per_s": B / sec, "model_gflops_per_s": flops / sec / 1e9}


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def step_breakdown(cfg_name: str, obs_dim: int, action_dim: int, amp: bool) -> dict[str, float]:
    """Shares of one training step's CPU time by kind of op, from torch.profiler (self time, forward and
    backward): matmuls (what bf16 speeds up most), attention, dtype casts, the optimizer, the rest."""
    from torch.profiler import ProfilerActivity, profile

    learner, batch = learner_and_batch(cfg_name, obs_dim, action_dim, amp)
    for _ in range(3):
        learner.update(batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            learner.update(batch)
    kinds = {"matmul": 0.0, "attention": 0.0, "casts": 0.0, "optimizer": 0.0, "other": 0.0}
    for e in prof.key_averages():
        if e.key in MATMUL_OPS:
            kind = "matmul"
        elif "scaled_dot_product" in e.key:
            kind = "attention"
        elif e.key in ("aten::copy_", "aten::_to_copy"):
            kind = "casts"
        elif e.key.startswith("Optimizer.") or "adam" in e.key.lower():
            kind = "optimizer"
        else:
            kind = "other"
        kinds[kind] += e.self_cpu_time_total
    total = sum(kinds.values())
    return {k: v / total for k, v in kinds.items()}


def bench_decoding(action_dim: int, batch: int, mode: str, seconds: float) -> dict:
    """mode: 'uncached' (d full passes), 'cached' (KV cache), 'compiled' (KV cache under torch.compile,
    what QTPolicy(compile=True) runs)."""
    cfg = preset("default")
    torch.manual_seed(0)
    net = QTransformerNet(39, action_dim, 256, 1, cfg.model).eval()
    obs = torch.randn(batch, 39)
    row = {"d": action_dim, "batch": batch, "mode": mode}
    if mode == "compiled":
        fn = torch.compile(lambda o: greedy_decode(net, o), dynamic=False)
        t = time.perf_counter()
        with torch.inference_mode():
            fn(obs)
        row["compile_s"] = time.perf_counter() - t

        def call():
            with torch.inference_mode():
                fn(obs)
    else:
        def call():
            decode(net, obs, use_cache=mode == "cached")
    row["ms_per_action_batch"] = timeit(call, seconds) * 1e3
    return row


IMAGE_ENCODERS = (("cnn", 0), ("cnn", 8), ("film-efficientnet-b0", 0), ("film-efficientnet-b0", 8))


def bench_image_encoder(kind: str, tokens: int, image: int, batch: int, seconds: float) -> dict:
    """One camera of image x image x 3 beside a 39-d state, 10 tasks (so FiLM has a condition), the
    default preset's Transformer and K = 256, d = 4: training steps per second at `batch`, and the
    batch-1 latency of a greedy action (encoder, prefix pass, KV-cached decoding)."""
    cfg = preset("default")
    cfg.model.image_encoder, cfg.model.image_tokens = kind, tokens
    torch.manual_seed(0)
    net = QTransformerNet(39, 4, 256, 10, cfg.model, {"cam": (image, image, 3)})
    learner = QTransformerLearner(net, cfg.algo, "cpu")
    g = torch.Generator().manual_seed(0)
    frames = {"cam": torch.randint(0, 256, (batch, image, image, 3), dtype=torch.uint8, generator=g)}
    b = Batch(obs=torch.randn(batch, 39, generator=g), bins=torch.randint(256, (batch, 4), generator=g), reward=torch.rand(batch, generator=g),
              discount=torch.full((batch,), cfg.algo.gamma), bootstrap=torch.ones(batch), next_obs=torch.randn(batch, 39, generator=g),
              mc_return=torch.rand(batch, generator=g), task=torch.randint(10, (batch,), generator=g), images=frames, next_images=frames)
    step = timeit(lambda: learner.update(b), seconds, warmup=1)
    one = {"cam": frames["cam"][:1]}
    act = timeit(lambda: decode(learner.target_net, b.obs[:1], b.task[:1], images=one), seconds / 2)
    return {"encoder": kind, "image_tokens": tokens, "image": image, "batch": batch, "parameters": sum(p.numel() for p in net.parameters()),
            "steps_per_s": 1 / step, "samples_per_s": batch / step, "action_ms_batch1": act * 1e3}


def bench_d3rlpy_cql(obs_dim: int, action_dim: int, batch: int, seconds: float) -> dict | None:
    """d3rlpy's CQL (its default networks) on random transitions: gradient steps per second."""
    try:
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):  # d3rlpy imports the old gym, which prints a notice
            import d3rlpy
    except ImportError:
        return None
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # d3rlpy's info lines
    import numpy as np

    rng = np.random.default_rng(0)
    n, ep = 20_000, 100
    terminals = np.zeros(n, np.float32)
    terminals[ep - 1 :: ep] = 1.0
    data = d3rlpy.dataset.MDPDataset(
        rng.standard_normal((n, obs_dim)).astype(np.float32), rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
        rng.random(n).astype(np.float32), terminals,
    )
    algo = d3rlpy.algos.CQLConfig(batch_size=batch).create(device="cpu:0")
    algo.build_with_dataset(data)
    buffer = d3rlpy.dataset.ReplayBuffer(d3rlpy.dataset.InfiniteBuffer(), episodes=data.episodes)
    mini = buffer.sample_transition_batch(batch)
    sec = timeit(lambda: algo.update(mini), seconds)
    return {"name": f"d3rlpy {d3rlpy.__version__} CQL (default MLPs 256x256)", "batch": batch, "obs_dim": obs_dim,
            "action_dim": action_dim, "steps_per_s": 1 / sec, "samples_per_s": batch / sec}


def bench_peer(python: Path, quick: bool) -> dict | None:
    """Run bench/peer_qtransformer.py in another interpreter (the q-transformer package's venv)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.json"
        cmd = [str(python), str(Path(__file__).with_name("peer_qtransformer.py")), "--json", str(out),
               "--threads", str(torch.get_num_threads())] + (["--quick"] if quick else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            print(f"peer benchmark failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
            return None
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timings (noisier)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/speed.json"))
    parser.add_argument("--peer-python", type=Path, default=None, help="the interpreter of a venv with the q-transformer package")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile'd decoding (compiling takes minutes)")
    parser.add_argument("--no-images", action="store_true", help="skip the image encoders' training and action latency")
    parser.add_argument("--only-compiled-training", action="store_true", help="only eager against torch.compile'd training steps")
    args = parser.parse_args()
    s = 1.0 if args.quick else 3.0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    compiled = [] if args.no_compile else [bench_compiled_training(p, 39, 4, 4 * s, 4 if args.quick else 10, device) for p in ("builtin", "default")]
    if args.only_compiled_training:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
        print_compiled(compiled)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"compiled_training": compiled}, indent=1))
        print(f"wrote {args.out}")
        return

    peak32 = matmul_peak(torch.float32, 1024, s)
    peak16 = matmul_peak(torch.bfloat16, 1024, s)
    rounds = 4 if args.quick else 10
    default32, default16, default_ratios = bench_training_pair("default", 39, 4, 4 * s, rounds)
    large32, large16, large_ratios = bench_training_pair("large", 39, 4, 4 * s, rounds)
    training = [bench_training("builtin fp32", "builtin", 6, 3, False, s), default32, default16, large32, large16]
    ratios = {"default": default_ratios, "large": large_ratios}
    for row in training:
        row["fraction_of_fp32_peak"] = row["model_gflops_per_s"] * 1e9 / peak32
    breakdown = {f"{p} {'bf16' if amp else 'fp32'}": step_breakdown(p, 39, 4, amp) for p in ("default", "large") for amp in (False, True)}
    shares = {p: breakdown[f"{p} fp32"]["matmul"] for p in ("default", "large")}
    modes = ("uncached", "cached") + (() if args.no_compile else ("compiled",))
    decoding = [bench_decoding(d, b, m, s / 2) for d in (4, 7) for b in (1, 64) for m in modes]
    cql = bench_d3rlpy_cql(39, 4, 256, s)
    images = [] if args.no_images else [bench_image_encoder(k, n, 64, 64, s) for k, n in IMAGE_ENCODERS]
    peer = bench_peer(args.peer_python, args.quick) if args.peer_python else None

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"matmul peak (1024^3): fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s\n")
    print("| training | batch | K | d | steps/s | samples/s | model GFLOP/s | of fp32 peak |")
    print("|---|---|---|---|---|---|---|---|")
    for r in training:
        print(f"| {r['name']} | {r['batch']} | {r['bins']} | {r['d']} | {r['steps_per_s']:.1f} | {r['samples_per_s']:.0f} | "
              f"{r['model_gflops_per_s']:.1f} | {r['fraction_of_fp32_peak']:.1%} |")
    speed = {r["name"]: r["steps_per_s"] for r in training}
    bf16 = {p: statistics.median(x) for p, x in ratios.items()}
    print(f"\nbf16 / fp32 training speed, {rounds} alternating rounds in this process: " + ", ".join(
        f"{p} {bf16[p]:.2f}x (rounds {min(x):.2f}-{max(x):.2f})" for p, x in ratios.items()))
    ratio = peak16 / peak32
    for p in ("default", "large"):
        f = shares[p]
        print(f"  {p}: matmuls are {f:.0%} of an fp32 step's CPU time; if only they sped up ({ratio:.2f}x, the peak ratio), "
              f"the step would be {1 / ((1 - f) + f / ratio):.2f}x faster (an estimate: bf16 also shortens some elementwise ops)")
    print("\n| where a step's CPU time goes (torch.profiler) | " + " | ".join(next(iter(breakdown.values()))) + " |")
    print("|---|" + "---|" * len(next(iter(breakdown.values()))))
    for name, kinds in breakdown.items():
        print(f"| {name} | " + " | ".join(f"{v:.0%}" for v in kinds.values()) + " |")
    if cql:
        ours = next(r for r in training if r["name"] == "default fp32")
        print(f"context: {cql['name']}, batch {cql['batch']}, {cql['obs_dim']}-d observations, {cql['action_dim']}-d actions: "
              f"{cql['steps_per_s']:.1f} steps/s ({ours['steps_per_s'] / cql['steps_per_s']:.1f}x fewer than our default fp32 step)")
    print("\n| decoding (default model, K=256) | batch | mode | ms per call | speed-up over uncached |")
    print("|---|---|---|---|---|")
    for r in decoding:
        base = next(x for x in decoding if x["d"] == r["d"] and x["batch"] == r["batch"] and x["mode"] == "uncached")
        note = f" (compiled in {r['compile_s']:.0f} s)" if "compile_s" in r else ""
        print(f"| d={r['d']} | {r['batch']} | {r['mode']}{note} | {r['ms_per_action_batch']:.2f} | "
              f"{base['ms_per_action_batch'] / r['ms_per_action_batch']:.2f}x |")
    if compiled:
        print_compiled(compiled)
    if images:
        print("\n| image encoder (64x64x3, one camera; default Transformer, K=256, d=4) | tokens | parameters | training steps/s at batch 64 | samples/s | action latency, batch 1, ms |")
        print("|---|---|---|---|---|---|")
        for r in images:
            print(f"| {r['encoder']} | {max(1, r['image_tokens'])}{' (TokenLearner)' if r['image_tokens'] else ''} | {r['parameters']:,} | "
                  f"{r['steps_per_s']:.2f} | {r['samples_per_s']:.0f} | {r['action_ms_batch1']:.1f} |")
    if peer:
        print(f"\npeer: q-transformer {peer['package_version']} (torch {peer['torch_version']}, {peer['threads']} threads), "
              f"{peer['params']['total']:,} parameters ({peer['params']['q_head']:,} in its Q head); config in the JSON")
        print("| decoding d=7, K=256 | batch | peer head only, ms | peer with its encoder, ms | ours cached, ms | ours compiled, ms | peer head / ours best |")
        print("|---|---|---|---|---|---|---|")
        for row in peer["decode"]:
            mine = {r["mode"]: r["ms_per_action_batch"] for r in decoding if r["d"] == 7 and r["batch"] == row["batch"]}
            best = min(mine.get("cached", float("inf")), mine.get("compiled", float("inf")))
            print(f"| | {row['batch']} | {row['head_ms']:.2f} | {row['full_ms']:.2f} | {mine.get('cached', float('nan')):.2f} | "
                  f"{mine.get('compiled', float('nan')):.2f} | {row['head_ms'] / best:.1f}x |")
        t = peer["train"]
        print(f"peer training step, batch {t['batch']}: {t['step_ms']:.0f} ms ({t['samples_per_s']:.0f} samples/s); "
              f"ours (default fp32, d=4): {1e3 / speed['default fp32']:.0f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "matmul_peak_gflops": {"fp32": peak32 / 1e9, "bf16": peak16 / 1e9},
        "training": training, "bf16_over_fp32": bf16, "bf16_over_fp32_rounds": ratios, "matmul_share_fp32": shares, "step_breakdown": breakdown, "decoding": decoding, "image_encoders": images, "d3rlpy_cql": cql, "peer_q_transformer": peer,
        "compiled_training": compiled,
    }, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
