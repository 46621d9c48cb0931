"""The cost of MetaWorld camera observations: milliseconds per environment step with and without a
rendered frame, per image size, and what that means for a camera dataset's size on this machine.

    python -m bench.camera [--task push-v3] [--camera corner] [--sizes 32 64 128] [--renders full fast] [--steps 60]

Steps with random actions from one reset, one process, for each image size and render mode ("full":
MetaWorld's scene as shipped; "fast": without shadows and multisampling); prints a table and writes
bench/results/camera/summary.json. MuJoCo renders offscreen with MUJOCO_GL (OSMesa, the software
renderer, unless set: egl on a GPU machine). Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def ms_per_step(env_id: str, steps: int) -> float:
    from qtransformer.envs import make_env

    env = make_env(env_id)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    env.step(rng.uniform(-1, 1, 4).astype(np.float32))  # the first frame sets the renderer up: not timed
    t = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        if terminated or truncated:
            env.reset(seed=1)
    seconds = time.perf_counter() - t
    env.close()
    return 1e3 * seconds / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="push-v3")
    p.add_argument("--camera", default="corner")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--renders", nargs="+", default=["full", "fast"], choices=["full", "fast"])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("bench/results/camera"))
    a = p.parse_args()
    from qtransformer.envs.metaworld import metaworld_env_id

    base = ms_per_step(metaworld_env_id([a.task]), a.steps)
    rows = [{"image_size": 0, "render": None, "ms_per_step": base}]
    for size in a.sizes:
        for render in a.renders:
            rows.append({"image_size": size, "render": render, "ms_per_step": ms_per_step(metaworld_env_id([a.task], a.camera, size, render), a.steps)})
    # an MT10 dataset of 10 tasks x 50 episodes x about 150 steps, made with one process
    steps_mt10 = 10 * 50 * 150
    print(f"MetaWorld {a.task}, camera {a.camera}, MUJOCO_GL={os.environ.get('MUJOCO_GL', 'osmesa (default)')}, {a.steps} steps each")
    print("| image | render | ms per step | frames/s | hours for 75k steps (MT10 x 50 episodes), one process | MiB per 75k frames |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        size = r["image_size"]
        r["hours_per_75k_steps"] = r["ms_per_step"] * steps_mt10 / 3.6e6
        r["mib_per_75k_frames"] = steps_mt10 * size * size * 3 / 2**20
        label = "none (state only)" if size == 0 else f"{size}x{size}"
        print(f"| {label} | {r['render'] or '-'} | {r['ms_per_step']:.1f} | {1e3 / r['ms_per_step']:.1f} | {r['hours_per_75k_steps']:.2f} | {r['mib_per_75k_frames']:.0f} |")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "summary.json").write_text(json.dumps({"task": a.task, "camera": a.camera, "rows": rows, "mujoco_gl": os.environ.get("MUJOCO_GL")}, indent=1))
    print(f"wrote {a.out / 'summary.json'}")


if __name__ == "__main__":
    main()
