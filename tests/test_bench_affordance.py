"""bench.affordance's scoring, by hand."""

from __future__ import annotations

import numpy as np

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
