"""Learning quality on the built-in task: presets and options across seeds and two dataset sizes.

    python -m bench.builtin [--variants default,paper,builtin] [--seeds 3] [--data small,large] [--quick]

Each run trains one variant (a preset plus overrides, VARIANTS below) on the built-in dataset and
evaluates the greedy policy on the same 200 evaluation seeds. The datasets are the demo's
(100 demonstrations + 400 autonomous episodes, seed 0, about 12k transitions) and a five-times
larger one (500 + 2000, seed 1, about 60k). Runs go two at a time, one CPU thread each; a finished
run (same variant, seed, dataset and settings) is reused, and the table says at which commit each row's
runs were trained (a reused run may be older than the code). Prints a table, writes
bench/results/builtin/summary.json. Not run by the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np

from bench.compare import code_line, code_version

DATASETS = {"small": (100, 400, 0), "large": (500, 2000, 1)}  # demonstrations, autonomous episodes, seed

# name -> (preset, overrides): what each variant changes, on top of its preset.
VARIANTS: dict[str, tuple[str, dict]] = {
    "default": ("default", {}),
    "paper": ("paper", {}),
    "builtin": ("builtin", {}),
    "builtin_prior": ("builtin", {"prior": "auto"}),  # the builtin preset with the default's BC prior (the preset's own since 2026-12-06)
    "builtin_prior_successful": ("builtin", {"prior": "auto-successful"}),  # the builtin preset with the default's prior since 2026-12-07 (successful episodes)
    "builtin_prior_0.01": ("builtin", {"prior_weight": 0.01}),  # the builtin preset's prior at the K = 256 regime's weight (before 2026-12-07)
    "builtin_prior_targets": ("builtin", {"prior": "auto", "algo": {"prior_in_targets": True}}),  # and the prior's choice in the TD targets
    "default_prior_targets": ("default", {"algo": {"prior_in_targets": True}}),  # the default (its prior) with the prior's choice in the TD targets
    "builtin_paper_head": ("builtin", {"algo": {"head_init": "default"}}),  # the builtin preset before head_init
    "default_paper_alpha": ("default", {"algo": {"conservative_bins": 0}}),
    "default_paper_head": ("default", {"algo": {"head_init": "default"}}),
    "default_imitation": ("default", {"algo": {"imitation_weight": 1.0}}),
    "default_imitation_sg": ("default", {"algo": {"imitation_weight": 1.0, "imitation_stop_gradient": True}}),  # the head through a stop-gradient
    "default_imitation_demos_sg": ("default", {"algo": {"imitation_weight": 1.0, "imitation_source": "demonstration", "imitation_stop_gradient": True}}),  # an in-run prior: demonstrations, through a stop-gradient
    "default_prior_successful": ("default", {"prior": "successful"}),  # the BC prior on the successful episodes, not the demonstrations
    "default_no_prior": ("default", {"prior": "none"}),  # the default preset before it took a BC prior (2026-12-06)
    "default_support_0.1": ("default", {"algo": {"imitation_weight": 1.0, "support_tau": 0.1}}),
    "default_support_0.3": ("default", {"algo": {"imitation_weight": 1.0, "support_tau": 0.3}}),
    "default_support_demos_0.3": ("default", {"algo": {"imitation_weight": 1.0, "imitation_source": "demonstration", "support_tau": 0.3}}),
    "default_support_targets_0.1": ("default", {"algo": {"imitation_weight": 1.0, "support_tau": 0.1, "support_in_targets": True}}),
    "default_nstep3": ("default", {"algo": {"n_step": 3}}),
    "default_hl_gauss16": ("default", {"model": {"value_atoms": 16}}),  # HL-Gauss value head, 16 atoms, sigma 0.75 atom widths
    "default_hl_gauss51": ("default", {"model": {"value_atoms": 51}}),
    "default_smooth64": ("default", {"algo": {"bin_smoothing": 1 / 64}}),  # TD targets shared with neighbouring bins, sigma 4 bins at K = 256
    "default_fourier4": ("default", {"model": {"bin_fourier": 4}}),  # bin tokens plus Fourier features of the bin's centre, 4 frequencies
    "default_smooth32": ("default", {"algo": {"bin_smoothing": 1 / 32}}),  # sigma 8 bins at K = 256
}
EVAL_EPISODES = 200


def dataset_path(root: Path, name: str) -> Path:
    return root / f"dataset_{name}"


def dataset_dir(root: Path, name: str) -> Path:
    """The bench dataset `name` under `root`, made (and its commit recorded) when it is not there yet."""
    from qtransformer.data import EpisodeStore
    from qtransformer.envs.builtin_dataset import make_builtin_dataset
    from qtransformer.fileio import atomic_write_text

    demos, autonomous, seed = DATASETS[name]
    path = dataset_path(root, name)
    if not (path / "meta.json").exists():
        code = code_version()
        EpisodeStore.create(path, make_builtin_dataset(demos, autonomous, seed=seed))
        # The runs record the code they were trained at; this records the code that made their data.
        atomic_write_text(path / "bench_dataset.json", json.dumps({"demos": demos, "autonomous": autonomous, "seed": seed, "code": code}, indent=1))
    return path


def dataset_code(root: Path, name: str) -> str:
    """The commit that made a bench dataset ('unrecorded' for one made before this was written)."""
    info = dataset_path(root, name) / "bench_dataset.json"
    return json.loads(info.read_text())["code"] if info.exists() else "unrecorded"


def evaluate_both(run_dir: Path) -> dict:
    """Greedy success of the final checkpoint's online and target (Polyak-averaged) networks, each on
    the same EVAL_EPISODES episodes: {"success_online": float, "success_target": float}."""
    from safetensors.torch import load_file

    from qtransformer.envs import BUILTIN_ENV_ID
    from qtransformer.evaluate import evaluate_policy
    from qtransformer.policy import QTPolicy

    policy = QTPolicy.from_checkpoint(run_dir)
    state = policy.model_dir.parent / "training_state"
    online = state / "online.safetensors"  # absent when model/ holds the online network
    out = {}
    for name, path in (("online", online if online.exists() else policy.model_dir / "model.safetensors"), ("target", state / "target.safetensors")):
        policy.net.load_state_dict(load_file(str(path)))
        out[f"success_{name}"] = evaluate_policy(policy, BUILTIN_ENV_ID, EVAL_EPISODES)["success_rate"]
    return out


def run(root: str, variant: str, data: str, seed: int, steps: int, curve_every: int) -> dict:
    import torch

    from qtransformer.config import apply_overrides, preset, to_dict
    from qtransformer.envs import BUILTIN_ENV_ID
    from qtransformer.fileio import atomic_write_text
    from qtransformer.train import train

    torch.set_num_threads(1)
    name, overrides = VARIANTS[variant]
    cfg = apply_overrides(preset(name), overrides, f"variant {variant}")
    cfg = dataclasses.replace(
        cfg, dataset=dataset_dir(Path(root), data), out=Path(root) / "runs" / f"{variant}_{data}_s{seed}", seed=seed,
        steps=steps or cfg.steps, eval_every=0, eval_episodes=0, progress=False,
    )
    # Evaluations during training and the network the policy acts with (algo.act_with: both are
    # evaluated below) leave the training itself unchanged: not part of the settings.
    settings = {"variant": variant, "data": data, "seed": seed, "config": to_dict(dataclasses.replace(cfg, out=Path("."), dataset=None))}
    settings["config"]["algo"].pop("act_with")
    if curve_every:
        cfg = dataclasses.replace(cfg, eval_every=curve_every, eval_episodes=100, eval_env=BUILTIN_ENV_ID)
    result_file = cfg.out / "bench_result.json"
    if result_file.exists():
        saved = json.loads(result_file.read_text())
        if saved["settings"] == settings:
            if "success_target" not in saved:  # a run from before both networks were evaluated
                saved.update(evaluate_both(cfg.out))
                atomic_write_text(result_file, json.dumps(saved, indent=1))
            saved["success_rate"] = saved[f"success_{cfg.algo.act_with}"]
            return saved
    shutil.rmtree(cfg.out, ignore_errors=True)
    t = time.perf_counter()
    code = code_version()
    train(cfg)
    both = evaluate_both(cfg.out)
    success = both[f"success_{cfg.algo.act_with}"]
    rows = [json.loads(line) for line in (cfg.out / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "train/q_data" in r][-1]
    result = {
        "settings": settings, "success_rate": success, **both, "wall_s": time.perf_counter() - t, "code": code,
        "q_data_end": last["train/q_data"], "q_unseen_end": last["train/q_unseen"],
        "curve": [[r["step"], r["eval/success_rate"]] for r in rows if "eval/success_rate" in r],  # 100 episodes each
    }
    atomic_write_text(result_file, json.dumps(result, indent=1))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/builtin"))
    p.add_argument("--variants", default="default,paper,builtin", help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--data", default="small,large", help="comma-separated: small (100 + 400 episodes), large (500 + 2000)")
    p.add_argument("--steps", type=int, default=0, help="gradient steps (0: each preset's own)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--curve-every", type=int, default=0, help="also evaluate (100 episodes) every this many steps, for learning curves")
    a = p.parse_args()
    variants, datas = a.variants.split(","), a.data.split(",")
    unknown = [v for v in variants if v not in VARIANTS] + [d for d in datas if d not in DATASETS]
    if unknown:
        p.error(f"unknown variant or dataset: {unknown}")
    a.out.mkdir(parents=True, exist_ok=True)
    for d in datas:
        dataset_dir(a.out, d)  # made once, before the workers start
    jobs = [(str(a.out), v, d, s, a.steps, a.curve_every) for d in datas for v in variants for s in range(a.seeds)]
    from qtransformer.workers import process_pool  # exits with this process (a killed run leaves no worker)

    with process_pool(a.workers) as pool:
        results = list(pool.map(run, *zip(*jobs, strict=True)))

    summary_file = a.out / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {"runs": {}}
    for r in results:
        s = r["settings"]
        summary["runs"][f"{s['variant']}_{s['data']}_s{s['seed']}"] = r
    table = {}
    for key in sorted(summary["runs"]):
        r = summary["runs"][key]
        s = r["settings"]
        table.setdefault((s["variant"], s["data"]), []).append(r)
    summary["table"] = [
        {
            "variant": v, "data": d, "mean": float(np.mean([r["success_rate"] for r in rs])), "std": float(np.std([r["success_rate"] for r in rs])),
            "per_seed": [r["success_rate"] for r in rs],
            **{f"{n}_mean": float(np.mean([r[f"success_{n}"] for r in rs])) for n in ("online", "target") if all(f"success_{n}" in r for r in rs)},
            "code": code_line(rs),
        }
        for (v, d), rs in sorted(table.items())
    ]
    summary["protocol"] = {"datasets": DATASETS, "eval_episodes": EVAL_EPISODES, "variants": {v: VARIANTS[v] for v in variants},
                           "dataset_code": {d: dataset_code(a.out, d) for d in DATASETS if dataset_path(a.out, d).exists()}}
    summary_file.write_text(json.dumps(summary, indent=1))
    print("| variant | data | success (mean ± std) | per seed | acting with online / target | trained at |\n|---|---|---|---|---|---|")
    for row in summary["table"]:
        both = f"{row['online_mean']:.3f} / {row['target_mean']:.3f}" if "target_mean" in row else ""
        print(f"| {row['variant']} | {row['data']} | {row['mean']:.3f} ± {row['std']:.3f} | {', '.join(f'{x:.3f}' for x in row['per_seed'])} | {both} | {row['code']} |")
    print(f"wrote {summary_file}")


if __name__ == "__main__":
    main()
