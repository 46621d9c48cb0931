"""End to end on the built-in task: Q-Transformer must beat the autonomous episodes it learned from.

The dataset mixes 100 scripted demonstrations with 400 episodes of a biased, noisy policy that mostly
fails (about 13 % success). The margin was calibrated once, on the first runs of this configuration
(learned policy 0.69 and 0.74 over 200 episodes, at training seeds 1 and 0), and is left alone: the
learned policy must succeed at least 25 points more often than the autonomous episodes and than a
uniformly random policy. Since 2026-12-06 the `builtin` and `default` presets also train a BC prior on
the demonstrations and decode with it (0.88 for the demo's seed against 0.79 without; 0.945 since
2026-12-07, when the `builtin` preset's prior weight went from 0.01 to 0.03); the margins, calibrated
without it, were left as they were.
"""

from __future__ import annotations

from qtransformer.config import apply_overrides, preset
from qtransformer.data import EpisodeStore
from qtransformer.envs import BUILTIN_ENV_ID
from qtransformer.envs.builtin_dataset import make_builtin_dataset
from qtransformer.evaluate import evaluate, evaluate_policy, random_policy
from qtransformer.policy import QTPolicy
from qtransformer.train import train

MARGIN_OVER_AUTONOMOUS = 0.25


def test_learned_policy_beats_its_autonomous_data(tmp_path):
    ds = make_builtin_dataset(demos=100, autonomous=400, seed=0, progress=False)
    EpisodeStore.create(tmp_path / "data", ds)
    autonomous_rate = ds.success_by_source()["autonomous"][1]

    cfg = apply_overrides(
        preset("builtin"),
        {"dataset": tmp_path / "data", "out": tmp_path / "run", "progress": False, "eval_every": 0, "eval_episodes": 0},
    )
    final = train(cfg)
    learned = evaluate_policy(QTPolicy.from_checkpoint(final), BUILTIN_ENV_ID, episodes=200)["success_rate"]
    random = evaluate(random_policy(BUILTIN_ENV_ID), BUILTIN_ENV_ID, episodes=200)["success_rate"]
    print(f"learned {learned:.3f}, autonomous data {autonomous_rate:.3f}, random {random:.3f}")
    assert learned >= autonomous_rate + MARGIN_OVER_AUTONOMOUS
    assert learned >= random + MARGIN_OVER_AUTONOMOUS


MARGIN_DEFAULT_PRESET = 0.25


def test_default_preset_at_k256_learns_the_builtin_task(tmp_path):
    """The `default` preset (K = 256, the paper's bins) on the demo's dataset, cut to 2000 of its 6000
    steps to fit CI. Calibrated once: 0.66 over 200 episodes at training seed 0 (acting with
    the target network; the autonomous data succeeds 0.13), and the test asks for 25 points over the
    autonomous data, so at least 0.38. Before the per-bin conservative weight and the
    calibrated head start, this preset reached 0.01-0.04 after all 6000 steps (docs/algorithm.md)."""
    ds = make_builtin_dataset(demos=100, autonomous=400, seed=0, progress=False)
    EpisodeStore.create(tmp_path / "data", ds)
    autonomous_rate = ds.success_by_source()["autonomous"][1]
    cfg = apply_overrides(
        preset("default"),
        {"dataset": tmp_path / "data", "out": tmp_path / "run", "steps": 2000, "progress": False, "eval_every": 0, "eval_episodes": 0},
    )
    learned = evaluate_policy(QTPolicy.from_checkpoint(train(cfg)), BUILTIN_ENV_ID, episodes=200)["success_rate"]
    print(f"default preset, 2000 steps: learned {learned:.3f}, autonomous data {autonomous_rate:.3f}")
    assert learned >= autonomous_rate + MARGIN_DEFAULT_PRESET
