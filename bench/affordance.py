"""Q-values as affordances: does Q(s, a*; instruction) predict whether the instruction can succeed from s?

    python -m bench.affordance [--seeds 3] [--rates 0 0.25] [--quick] [--out bench/results/affordance]

The protocol (fixed before any number was seen), a MetaWorld analogue of the paper's SayCan-style use:

- data: 5 MetaWorld tasks (bench.compare's: reach, button-press-topdown, drawer-open, door-open,
  window-open), per task 10 scripted-expert demonstrations and 40 perturbed autonomous episodes
  (`make-dataset metaworld`, seed 0);
- policies: one multi-task Q-Transformer per seed and relabelling rate, the `builtin` preset's network
  (K = 16, as bench.compare) for 4000 steps, `--negative-rate` 0 (no relabelling) and 0.25 (a quarter of
  every batch relabelled to another task, reward 0);
- held-out pairs: for each task t and evaluation seed i (the fixed seeds of `qtransformer eval`, which
  no training episode starts from), the start state s of task t's scene and every instruction j (task
  id j). The label is 1 when j = t and the greedy policy's rollout of task t from s succeeds, and 0 when
  j != t (task j cannot succeed in task t's scene) or the rollout fails;
- the predictor: the value of the greedy action, `policy.q_values(s, task=j)`. Reported: the area
  under the ROC curve (threshold-free), and precision, recall and F1 at the threshold that maximises
  F1 (the same rule for every policy), plus the F1 among matched pairs only (does Q know when its own
  task will fail?).

`--language-encoder hash|minilm|hf:<folder>` (beside the protocol, which conditions on task ids): the same
policies conditioned on each task's instruction instead (the paper's setting), every pair scored with task j's
training instruction, and again with a held-out paraphrase of it (bench.vision_language.PARAPHRASES, never
in training): `policy.q_values(s, instruction=[...])`, one observation read once per instruction. Its runs
sit beside the task-id ones under the same OUT (their file names carry the encoder).

Writes OUT/summary.json ({"methods": {"relabel_<rate>": {"mean", "std", "per_seed"}} with F1 as the
figure, "auroc", "precision", "recall", "f1_matched", "protocol"}) and OUT/table.md. Finished runs are
reused (resumable). The paper reports F1 0.82 with relabelling and 0.71 without, on its real-robot data.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tyro

TASKS = ("reach-v3", "button-press-topdown-v3", "drawer-open-v3", "door-open-v3", "window-open-v3")


@dataclass
class Args:
    """Q-values as success predictors for (start state, instruction) pairs, with and without negative relabelling."""

    out: Path = Path("bench/results/affordance")
    """Results folder: dataset/, runs/, summary.json, table.md."""
    seeds: int = 3
    """Training seeds per relabelling rate."""
    rates: tuple[float, ...] = (0.0, 0.25)
    """--negative-rate values compared."""
    steps: int = 4000
    """Gradient steps per policy."""
    episodes: int = 20
    """Evaluation start states per task."""
    demos: int = 10
    """Demonstrations per task in the dataset."""
    autonomous: int = 40
    """Autonomous episodes per task in the dataset."""
    jobs: int = 2
    """Runs side by side, one CPU thread each."""
    language_encoder: str = "none"
    """none: task ids (the protocol); hash, minilm or hf:<folder>: instructions, scored on the training
    instructions and on held-out paraphrases (see the module docstring)."""
    quick: bool = False
    """A check that everything runs: 1 seed, 300 steps, 4 start states per task, 2 + 4 episodes per task."""


def dataset(args: Args) -> Path:
    from qtransformer.data import EpisodeStore
    from qtransformer.envs.metaworld_dataset import make_metaworld_dataset

    path = args.out / "dataset"
    settings = {"tasks": TASKS, "demos": args.demos, "autonomous": args.autonomous}
    if (path / "meta.json").exists() and json.loads((args.out / "dataset.json").read_text()) == json.loads(json.dumps(settings)):
        return path
    shutil.rmtree(path, ignore_errors=True)
    ds = make_metaworld_dataset(list(TASKS), args.demos, args.autonomous, recipe="perturbed", seed=0, workers=args.jobs)
    EpisodeStore.create(path, ds)
    (args.out / "dataset.json").write_text(json.dumps(settings))
    return path


def run(spec: dict) -> dict:
    """Train one policy, then score every (start state, instruction) pair -> {"spec", "scores", "labels", "matched", ...}."""
    import torch

    torch.set_num_threads(1)
    from bench.vision_language import PARAPHRASES
    from qtransformer.config import apply_overrides, preset
    from qtransformer.envs import make_env
    from qtransformer.evaluate import eval_seeds, evaluate_policy
    from qtransformer.policy import QTPolicy
    from qtransformer.train import train

    out = Path(spec["out"])
    name = run_name(spec)
    result_file = out / "runs" / f"{name}.json"
    if result_file.exists() and json.loads(result_file.read_text())["spec"] == spec:
        return json.loads(result_file.read_text())
    t0 = time.time()
    run_dir = out / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    encoder = spec.get("language_encoder", "none")
    cfg = apply_overrides(preset("builtin"), {"dataset": spec["dataset"], "out": str(run_dir), "seed": spec["seed"], "steps": spec["steps"],
                                              "eval_episodes": 0, "progress": False, "threads": 1, "save_every": spec["steps"],
                                              "negative_rate": spec["rate"], "prior": "none",  # the values' own greedy action, as measured before the preset took a prior
                                              "model": {"language_encoder": encoder}})
    policy = QTPolicy.from_checkpoint(train(cfg))
    names = list(policy.meta["task_names"])
    language = policy.processor.uses_language
    trained_texts = [policy.processor.task_instructions[t] for t in TASKS] if language else None
    paraphrases = [PARAPHRASES[t] for t in TASKS]
    scores, paraphrase_scores, labels, matched = [], [], [], []
    for t, task in enumerate(TASKS):
        env_id = f"metaworld:{task}"
        rollouts = evaluate_policy(policy, env_id, spec["episodes"])["per_episode"]
        env = make_env(env_id)
        for s, episode in zip(eval_seeds(spec["episodes"], 0), rollouts, strict=True):
            obs, _ = env.reset(seed=s)  # the rollout's own start state
            if language:  # one observation, read once per instruction: (len(TASKS),)
                scores += policy.q_values(obs, instruction=trained_texts).tolist()
                paraphrase_scores += policy.q_values(obs, instruction=paraphrases).tolist()
            else:
                scores += policy.q_values(obs, task=[names.index(other) for other in TASKS]).tolist()
            labels += [int(j == t and episode["success"]) for j in range(len(TASKS))]
            matched += [j == t for j in range(len(TASKS))]
        env.close()
    result = {"spec": spec, "scores": scores, "labels": labels, "matched": matched, "wall_s": time.time() - t0,
              "success_rate": float(np.mean([lab for lab, m in zip(labels, matched, strict=True) if m]))}
    if language:
        result["paraphrase_scores"] = paraphrase_scores
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result))
    return result


def run_name(spec: dict) -> str:
    """relabel<rate>_seed<seed>, with the language encoder appended for a language-conditioned run."""
    encoder = spec.get("language_encoder", "none")
    suffix = "" if encoder == "none" else "_" + "".join(c if c.isalnum() else "-" for c in encoder)
    return f"relabel{spec['rate']}_seed{spec['seed']}{suffix}"


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def best_f1(scores: np.ndarray, labels: np.ndarray) -> dict:
    """Precision, recall and F1 of `score >= threshold` at the threshold (among the scores) maximising F1."""
    best = {"f1": 0.0, "precision": 0.0, "recall": 0.0, "threshold": float("nan")}
    for th in np.unique(scores):
        pred = scores >= th
        tp = int((pred & (labels == 1)).sum())
        if tp == 0:
            continue
        precision, recall = tp / int(pred.sum()), tp / int((labels == 1).sum())
        f1 = 2 * precision * recall / (precision + recall)
        if f1 > best["f1"]:
            best = {"f1": f1, "precision": precision, "recall": recall, "threshold": float(th)}
    return best


def summarize(args: Args, results: list[dict]) -> dict:
    methods, extra = {}, {}
    for rate in args.rates:
        rs = sorted((r for r in results if r["spec"]["rate"] == rate), key=lambda r: r["spec"]["seed"])
        rows = []
        for r in rs:
            s, y, m = np.asarray(r["scores"]), np.asarray(r["labels"]), np.asarray(r["matched"])
            row = {"auroc": auroc(s, y), **best_f1(s, y), "f1_matched": best_f1(s[m], y[m])["f1"], "auroc_matched": auroc(s[m], y[m]),
                   "success_rate": r["success_rate"], "positives": int(y.sum()), "pairs": int(len(y))}
            if "paraphrase_scores" in r:  # the same pairs, each instruction worded as never in training
                p = np.asarray(r["paraphrase_scores"])
                row.update(f1_paraphrase=best_f1(p, y)["f1"], auroc_paraphrase=auroc(p, y))
            rows.append(row)
        name = f"relabel_{rate:g}"
        f1 = [r["f1"] for r in rows]
        methods[name] = {"mean": float(np.mean(f1)), "std": float(np.std(f1)), "per_seed": f1}
        extra[name] = {k: _nanmean([r[k] for r in rows]) for k in rows[0]}
    protocol = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()}
    protocol.update(tasks=list(TASKS), network="builtin preset (K = 16, d_model 64)", threshold="the F1-maximising score, per policy",
                    labels="matched pair: the greedy rollout's success; mismatched pair: 0",
                    conditioning="task ids" if args.language_encoder == "none" else f"instructions ({args.language_encoder})")
    return {"methods": methods, "details": extra, "protocol": protocol}


def _nanmean(xs: list[float]) -> float:
    """The mean over the defined values (AUROC is undefined for a policy with no success); nan if none is."""
    xs = [x for x in xs if not np.isnan(x)]
    return float(np.mean(xs)) if xs else float("nan")


def markdown(summary: dict) -> str:
    lines = ["| negative relabelling | F1 (mean ± std over seeds) | precision | recall | AUROC | F1, matched pairs only | AUROC, matched | policy success |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in summary["methods"].items():
        d = summary["details"][name]
        lines.append(f"| rate {name.split('_')[1]} | {m['mean']:.2f} ± {m['std']:.2f} | {d['precision']:.2f} | {d['recall']:.2f} | {d['auroc']:.2f} | "
                     f"{d['f1_matched']:.2f} | {d['auroc_matched']:.2f} | {d['success_rate']:.2f} |")
    if any("f1_paraphrase" in d for d in summary["details"].values()):
        lines += ["", "| negative relabelling | F1, held-out paraphrases | AUROC, held-out paraphrases |", "|---|---|---|"]
        for name, d in summary["details"].items():
            lines.append(f"| rate {name.split('_')[1]} | {d['f1_paraphrase']:.2f} | {d['auroc_paraphrase']:.2f} |")
    return "\n".join(lines)


def main(args: Args) -> None:
    from bench.compare import run_in_pool

    if args.quick:
        args.seeds, args.steps, args.episodes, args.demos, args.autonomous = 1, 300, 4, 2, 4
    from qtransformer.nets.language import check_encoder_name

    problem = check_encoder_name(args.language_encoder)
    if problem:  # before the dataset is made: a typo costs nothing
        raise SystemExit(f"--language-encoder: {problem}")
    args.out.mkdir(parents=True, exist_ok=True)
    data = dataset(args)
    language = {} if args.language_encoder == "none" else {"language_encoder": args.language_encoder}  # task-id runs keep their spec
    specs = [{"out": str(args.out), "dataset": str(data), "rate": r, "seed": s, "steps": args.steps, "episodes": args.episodes} | language
             for s in range(args.seeds) for r in args.rates]
    results = run_in_pool(_run_and_report, specs, args.jobs, run_name)
    summary = summarize(args, results)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    table = markdown(summary)
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    print(f"wrote {args.out / 'summary.json'} and {args.out / 'table.md'}")


def _run_and_report(spec: dict) -> dict:
    r = run(spec)
    return {**r, "train_s": r["wall_s"]}


if __name__ == "__main__":
    main(tyro.cli(Args))
