"""bench.affordance's scoring, by hand, and its language-conditioned variant end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.affordance import auroc, best_f1


def test_auroc_by_hand():
    s, y = np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0])
    assert auroc(s, y) == 0.75  # positives 0.9 and 0.3 against negatives 0.8 and 0.1: 3 of 4 pairs ordered
    assert auroc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5  # a tie counts half
    assert np.isnan(auroc(s, np.ones(4, int)))


def test_best_f1_by_hand():
    s, y = np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0])
    best = best_f1(s, y)
    # threshold 0.9: P 1, R 1/2, F1 2/3; 0.8: P 1/2, R 1/2; 0.3: P 2/3, R 1, F1 0.8; 0.1: P 1/2, R 1, F1 2/3
    assert best["threshold"] == 0.3 and abs(best["f1"] - 0.8) < 1e-12 and abs(best["precision"] - 2 / 3) < 1e-12 and best["recall"] == 1.0


def test_run_names_keep_the_task_id_runs_and_carry_the_encoder():
    from bench.affordance import run_name

    assert run_name({"rate": 0.25, "seed": 1}) == "relabel0.25_seed1"  # the protocol's runs keep their files
    assert run_name({"rate": 0.0, "seed": 0, "language_encoder": "minilm"}) == "relabel0.0_seed0_minilm"
    assert run_name({"rate": 0.0, "seed": 0, "language_encoder": "hf:/m/enc"}) == "relabel0.0_seed0_hf--m-enc"


def test_a_language_run_scores_instructions_and_their_paraphrases(tmp_path):
    """End to end on a tiny dataset: a hashed-language policy scores every (start, instruction) pair with the
    training instructions and with held-out paraphrases; the summary and table report both."""
    pytest.importorskip("metaworld")
    from bench.affordance import TASKS, Args, main

    out = tmp_path / "aff"
    main(Args(out=out, seeds=1, rates=(0.25,), steps=10, episodes=1, demos=1, autonomous=1, jobs=1, language_encoder="hash"))
    run = json.loads((out / "runs" / "relabel0.25_seed0_hash.json").read_text())
    n = len(TASKS) ** 2  # one start state per task x every instruction
    assert len(run["scores"]) == len(run["paraphrase_scores"]) == len(run["labels"]) == n
    assert run["scores"] != run["paraphrase_scores"]  # the wording reaches the values
    summary = json.loads((out / "summary.json").read_text())
    assert {"f1_paraphrase", "auroc_paraphrase"} <= set(summary["details"]["relabel_0.25"])
    assert summary["protocol"]["conditioning"] == "instructions (hash)"
    assert "held-out paraphrases" in (out / "table.md").read_text()
