"""Does bf16 autocast keep the learning curve? The built-in task, trained twice from the same seed:
fp32 and --amp-bf16, evaluated every 1000 steps on the same 200 episodes. Prints a table, writes JSON.

    python -m bench.bf16_curve [--out bench/results/bf16_curve] [--seeds 1]

The two runs go side by side, one CPU thread each (about 4 minutes on 2 cores). Not run by the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path


def run(out: str, dataset: str, bf16: bool, seed: int) -> dict:
    import time

    import torch

    from qtransformer.config import preset
    from qtransformer.train import train

    torch.set_num_threads(1)
    run_dir = Path(out) / f"{'bf16' if bf16 else 'fp32'}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = dataclasses.replace(
        preset("builtin"), dataset=Path(dataset), out=run_dir, seed=seed, amp_bf16=bf16, eval_every=1000, eval_episodes=200, progress=False,
    )
    t = time.perf_counter()
    train(cfg)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "bf16": bf16, "seed": seed, "wall_s": time.perf_counter() - t,
        "curve": [[r["step"], r["eval/success_rate"]] for r in rows if "eval/success_rate" in r],
        "q_data": [[r["step"], r["train/q_data"]] for r in rows if "train/q_data" in r and r["step"] % 1000 == 0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/bf16_curve"))
    p.add_argument("--seeds", type=int, default=1)
    a = p.parse_args()
    from qtransformer.data import EpisodeStore
    from qtransformer.envs.builtin_dataset import make_builtin_dataset

    data = a.out / "dataset"
    if not (data / "meta.json").exists():
        EpisodeStore.create(data, make_builtin_dataset(100, 400, seed=0))  # the demo's dataset
    jobs = [(str(a.out), str(data), bf16, s) for s in range(a.seeds) for bf16 in (False, True)]
    from qtransformer.workers import process_pool  # exits with this process (a killed run leaves no worker)

    with process_pool(2) as pool:
        results = list(pool.map(run, *zip(*jobs, strict=True)))
    steps = [s for s, _ in results[0]["curve"]]
    print("| run | " + " | ".join(f"success @ {s}" for s in steps) + " | q_data @ end | wall s |")
    print("|---|" + "---|" * (len(steps) + 2))
    for r in results:
        cells = " | ".join(f"{v:.3f}" for _, v in r["curve"])
        print(f"| {'bf16' if r['bf16'] else 'fp32'} seed {r['seed']} | {cells} | {r['q_data'][-1][1]:.3f} | {r['wall_s']:.0f} |")
    (a.out / "bf16_curve.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {a.out / 'bf16_curve.json'}")


if __name__ == "__main__":
    main()
