"""bench.vision_language: the held-out paraphrases and the summary's arithmetic, by hand (the run itself
renders 0.1-0.2 s per full-scene frame on a CPU, and a CPU-sized run takes an hour: `python -m bench.vision_language --quick` is its pipeline check)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("metaworld")

from bench.vision_language import PARAPHRASES, Args, apply_size, data_settings, dataset, earlier_run, main, markdown, summarize  # noqa: E402
from qtransformer.envs.metaworld import MT10_INSTRUCTIONS, MT10_TASKS  # noqa: E402


def test_every_mt10_task_has_a_paraphrase_unlike_its_training_instruction():
    assert set(PARAPHRASES) == set(MT10_TASKS)
    for task in MT10_TASKS:
        assert PARAPHRASES[task] != MT10_INSTRUCTIONS[task]
    assert len(set(PARAPHRASES.values())) == len(PARAPHRASES)


def test_summary_by_hand():
    def result(method, seed, a, b, pa, pb):
        return {"spec": {"method": method, "seed": seed}, "success_rate": (a + b) / 2, "paraphrase_success_rate": (pa + pb) / 2,
                "per_task": {"reach-v3": a, "push-v3": b}, "per_task_paraphrase": {"reach-v3": pa, "push-v3": pb}}

    results = [result("qtransformer", 0, 1.0, 0.5, 0.5, 0.0), result("qtransformer", 1, 0.5, 0.0, 0.5, 0.5), result("bc_demos", 0, 0.0, 0.0, 0.0, 0.0)]
    s = summarize(Args(tasks="reach-v3,push-v3"), results)
    qt = s["methods"]["qtransformer"]
    assert qt["per_seed"] == [0.75, 0.25] and qt["mean"] == 0.5 and qt["std"] == 0.25
    assert qt["paraphrase"]["per_seed"] == [0.25, 0.5] and qt["paraphrase"]["mean"] == 0.375
    assert qt["per_task"] == {"reach-v3": 0.75, "push-v3": 0.25} and qt["per_task_paraphrase"] == {"reach-v3": 0.5, "push-v3": 0.25}
    assert s["protocol"]["paraphrases"] == {"reach-v3": PARAPHRASES["reach-v3"], "push-v3": PARAPHRASES["push-v3"]}
    table = markdown(s)
    assert "| Q-Transformer (default preset) | 2 | 0.500 ± 0.250 | 0.375 ± 0.125 |" in table
    assert "| qtransformer (training / paraphrase) | 0.75 / 0.50 | 0.25 / 0.25 |" in table


def test_the_cpu_size_draws_fast_frames_and_keeps_the_full_protocols_dataset_name():
    cpu = apply_size(Args(cpu=True))
    assert (cpu.tasks, cpu.render, cpu.image_encoder, cpu.language_encoder, cpu.device) == ("mt10", "fast", "cnn", "minilm", "cpu")
    assert data_settings(cpu)["render"] == "fast"  # another dataset folder than the full scene's frames
    full = apply_size(Args())
    assert "render" not in data_settings(full)  # the full protocol's folder name is what it was
    assert (full.steps, full.frames, full.image_encoder, full.render) == (20_000, 6, "film-efficientnet-b0", "full")
    # A flag given beside a size wins over the size's value (--cpu --steps 20000 is 20,000 steps, not 5000).
    longer = apply_size(Args(cpu=True, steps=20_000, seeds=3))
    assert (longer.steps, longer.seeds, longer.frames, longer.image_size) == (20_000, 3, 1, 32)
    assert data_settings(longer) == data_settings(cpu)  # the same dataset: only training changed
    assert apply_size(Args(quick=True, threads=2)).threads == 2
    with pytest.raises(SystemExit, match="two sizes"):
        apply_size(Args(cpu=True, quick=True))


def _finished_run(root, spec, with_state=True):
    import json

    run = root / "runs" / f"{spec['method']}_seed{spec['seed']}"
    ckpt = run / "checkpoints" / f"step_{spec['steps']:08d}"
    (ckpt / "model").mkdir(parents=True)
    if with_state:
        (ckpt / "training_state").mkdir()
        (ckpt / "training_state" / "state.json").write_text("{}")
    (run / "checkpoints" / "last").write_text(ckpt.name)
    (root / "runs" / f"{run.name}.json").write_text(json.dumps({"spec": spec}))
    return run


def test_extend_from_continues_only_a_finished_shorter_run_of_the_same_settings(tmp_path):
    spec = {"method": "qtransformer", "seed": 0, "dataset": "d", "steps": 20000, "eval_episodes": 10, "model": {"frames": 1}, "device": "cpu"}
    assert earlier_run(spec, None) is None and earlier_run(spec, tmp_path / "nothing") is None
    run = _finished_run(tmp_path / "a", spec | {"steps": 10000})
    assert earlier_run(spec, tmp_path / "a") == (run, 10000)
    assert earlier_run(spec | {"steps": 10000}, tmp_path / "a") is None  # not fewer steps: nothing to continue
    assert earlier_run(spec | {"seed": 1}, tmp_path / "a") is None  # another seed's run is not this one
    assert earlier_run(spec | {"model": {"frames": 6}}, tmp_path / "a") is None  # other settings: from scratch
    _finished_run(tmp_path / "b", spec | {"steps": 10000}, with_state=False)  # no optimizer state: not the same updates
    assert earlier_run(spec, tmp_path / "b") is None
    with pytest.raises(SystemExit, match="no runs/ folder"):
        main(Args(out=tmp_path / "c", extend_from=tmp_path / "nothing", no_train=True))
    with pytest.raises(SystemExit, match="--extend-from is --out"):
        main(Args(out=tmp_path / "a", extend_from=tmp_path / "a", no_train=True))


def test_extend_from_trains_on_the_dataset_of_the_runs_it_continues(tmp_path):
    # The earlier runs name their dataset (here outside their --out, as when they were continued before);
    # the longer runs use it rather than making the same dataset again under the new --out.
    import hashlib
    import json

    args = apply_size(Args(cpu=True, out=tmp_path / "longer", extend_from=tmp_path / "earlier"))
    name = f"dataset_{hashlib.sha1(json.dumps(data_settings(args), sort_keys=True).encode()).hexdigest()[:8]}"
    data = tmp_path / "first" / name
    data.mkdir(parents=True)
    (data / "meta.json").write_text("{}")
    spec = {"method": "bc_demos", "seed": 0, "dataset": str(data), "steps": 5000}
    _finished_run(tmp_path / "earlier", spec)
    assert dataset(args) == data


def test_a_qtransformer_run_names_the_prior_it_trains_and_a_bc_run_none():
    # The `default` preset trains a BC prior first (--prior auto-successful): its runs from before it (no "prior" in
    # their spec) are not reused as the default's; BC runs, which take no prior, keep their spec.
    from bench.vision_language import run_spec

    args = apply_size(Args(cpu=True))
    assert run_spec(args, Path("d"), "qtransformer", 0)["prior"] == "auto-successful"
    assert "prior" not in run_spec(args, Path("d"), "bc_demos", 0)
    assert "prior" not in run_spec(args, Path("d"), "qt_values", 0)  # the values alone: trains no prior
    assert args.methods == ("qtransformer", "bc_demos")  # beside the protocol only when asked for
