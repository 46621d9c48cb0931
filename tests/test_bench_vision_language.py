"""bench.vision_language: the held-out paraphrases and the summary's arithmetic, by hand (the run itself
renders 0.1-0.2 s per full-scene frame on a CPU, and a CPU-sized run takes an hour: `python -m bench.vision_language --quick` is its pipeline check)."""

from __future__ import annotations

import pytest

pytest.importorskip("metaworld")

from bench.vision_language import PARAPHRASES, Args, apply_quick, data_settings, markdown, summarize  # noqa: E402
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
    cpu = apply_quick(Args(cpu=True))
    assert (cpu.tasks, cpu.render, cpu.image_encoder, cpu.language_encoder, cpu.device) == ("mt10", "fast", "cnn", "minilm", "cpu")
    assert data_settings(cpu)["render"] == "fast"  # another dataset folder than the full scene's frames
    assert "render" not in data_settings(Args())  # the full protocol's folder name is what it was
    with pytest.raises(SystemExit, match="two sizes"):
        apply_quick(Args(cpu=True, quick=True))
