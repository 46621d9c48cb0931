"""bench.finetune: the settings a user passes reach `qtransformer finetune`'s config, and runs made
without them keep matching their specs (so finished runs are reused)."""

from pathlib import Path

import qtransformer.finetune as ft
from bench import finetune as bf


def test_online_fraction_reaches_the_finetune_config(monkeypatch, tmp_path: Path) -> None:
    seen = {}
    monkeypatch.setattr(ft, "finetune", lambda cfg: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(ft, "read_curve", lambda run_dir: [(0, 0.5)])
    spec = {"env_steps": 100, "updates_per_step": 0.02, "num_envs": 1, "eval_every": 50, "eval_episodes": 2, "seed": 0,
            "online_fraction": 0.0}
    curve = bf._finetune(spec, tmp_path / "offline", tmp_path / "run", scratch=False)
    assert curve == [[0, 0.5]]
    assert seen["cfg"].online_fraction == 0.0
    assert seen["cfg"].updates_per_step == 0.02
    del spec["online_fraction"]
    seen.clear()
    bf._finetune(spec, tmp_path / "offline", tmp_path / "run", scratch=False)
    assert seen["cfg"].online_fraction == ft.FinetuneConfig(checkpoint=Path(".")).online_fraction


def test_specs_name_the_online_fraction_only_when_set(monkeypatch, tmp_path: Path) -> None:
    captured: list[dict] = []

    def fake_pool(fn, specs, jobs, name):
        captured.extend(specs)
        return []

    import bench.compare

    monkeypatch.setattr(bench.compare, "run_in_pool", fake_pool)
    monkeypatch.setattr(bf, "offline_checkpoint", lambda out, seed, steps: tmp_path)
    monkeypatch.setattr(bf, "summarize", lambda args, results: {})
    monkeypatch.setattr(bf, "markdown", lambda summary: "")
    monkeypatch.setattr(bf, "plot", lambda summary, path: None)
    for value in (None, 0.0):
        captured.clear()
        bf.main(bf.Args(out=tmp_path / "out", seeds=1, arms=("finetune",), online_fraction=value))
        assert len(captured) == 1
        assert ("online_fraction" in captured[0]) == (value is not None)
        if value is not None:
            assert captured[0]["online_fraction"] == value
