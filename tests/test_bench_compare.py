"""bench/compare.py keeps working: a tiny run of our own methods end to end, resuming, and the docs block.

The benchmark's figures are not checked here (they come from the real run, docs/benchmarks.md); this
checks the plumbing the --quick and full runs rely on."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("metaworld")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import compare  # noqa: E402


def test_tiny_comparison_runs_resumes_and_reports(tmp_path, capsys):
    args = compare.Args(
        out=tmp_path / "cmp", tasks="reach-v3", demos=1, steps=20, seeds=1, eval_episodes=1, curve_points=2,
        methods=("qtransformer", "bc_demos"), scale=(0.5, 1.0), scale_methods=("qtransformer",), jobs=1,
    )
    compare.main(args)
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert set(summary["table"]) == {"qtransformer", "bc_demos"}
    row = summary["table"]["qtransformer"]
    assert row["seeds"] == 1 and set(row["per_task"]) == {"reach-v3"}
    assert [s for s, _ in zip(row["curve_steps"], row["curve"], strict=True)] == [10, 20]
    # the dataset's own success rates: demonstrations succeed, and they are reported per task
    data = summary["data"][summary["main_dataset"]]
    assert data["by_source"]["demonstration"] == 1.0 and data["by_task"]["reach-v3"]["demonstration"] == 1.0
    # data scaling: 12 replays is the main dataset, 6 the half-size one
    assert set(summary["scaling"]["qtransformer"]) == {"6", "12"}  # JSON keys
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "| Q-Transformer |" in table and "| *data: demonstration episodes* | 1.00 |" in table and "Data scaling" in table
    capsys.readouterr()

    compare.main(args)  # every run is on disk: nothing is trained again
    assert "3 runs, 3 done before, 0 to do" in capsys.readouterr().out


def test_write_docs_replaces_only_its_block(tmp_path):
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    docs.write_text("# Benchmarks\n\nintro\n")
    compare.write_docs("table one\n", tmp_path, docs)
    compare.write_docs("table two\n", tmp_path, docs)
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n") and "table two" in text and "table one" not in text
    assert text.count(compare.DOCS_BEGIN) == 1 and text.count(compare.DOCS_END) == 1


def test_report_command_keeps_the_command_that_trained(tmp_path, monkeypatch):
    monkeypatch.setattr(compare.sys, "argv", ["/x/bench/regime.py", "--steps", "20000"])
    assert compare.report_command("bench.regime", tmp_path, no_train=False) == "python -m bench.regime --steps 20000"
    monkeypatch.setattr(compare.sys, "argv", ["/x/bench/regime.py", "--steps", "20000", "--no-train", "--write-docs"])
    # a table rewritten from the runs on disk names the command that trained them, not the rewrite
    assert compare.report_command("bench.regime", tmp_path, no_train=True) == "python -m bench.regime --steps 20000"
    assert compare.report_command("bench.regime", tmp_path / "fresh", no_train=True).endswith("--no-train --write-docs")
    assert compare.command_markdown("python -m bench.regime --steps 20000") == "Command: `python -m bench.regime --steps 20000`  "


def test_report_command_names_every_command_that_trained_into_a_folder(tmp_path, monkeypatch):
    for argv in (["--seeds", "5"], ["--scale", "1", "10"], ["--seeds", "5"]):  # the third repeats the first
        monkeypatch.setattr(compare.sys, "argv", ["/x/bench/regime.py", *argv])
        compare.report_command("bench.regime", tmp_path, no_train=False)
    monkeypatch.setattr(compare.sys, "argv", ["/x/bench/regime.py", "--no-train"])
    got = compare.report_command("bench.regime", tmp_path, no_train=True)
    assert got.splitlines() == ["python -m bench.regime --scale 1 10", "python -m bench.regime --seeds 5"]  # latest last, once each
    assert compare.command_markdown(got) == (
        "Commands, in the order they last ran: `python -m bench.regime --scale 1 10`; `python -m bench.regime --seeds 5`  ")


def test_threads_per_run_bad_value():
    with pytest.raises(SystemExit, match="--threads must be >= 1"):
        compare.Args(threads=0)


def test_code_version_names_the_commit_and_uncommitted_source(tmp_path):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    assert compare.code_version(tmp_path) == "unknown"  # not a checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("r\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert compare.code_version(tmp_path) == head
    (tmp_path / "README.md").write_text("changed docs\n")  # outside src/ and bench/: the code is the commit's
    assert compare.code_version(tmp_path) == head
    (tmp_path / "src" / "a.py").write_text("x = 2\n")
    assert compare.code_version(tmp_path) == head + "+dirty"
    assert compare.code_line([{"code": head}, {"code": "b"}, {"code": head}, {}]) == f"{head} (2 runs), b (1 run), unrecorded (1 run)"


def test_builtin_bench_dataset_records_the_code_that_made_it(tmp_path, monkeypatch):
    from bench import builtin

    monkeypatch.setitem(builtin.DATASETS, "tiny", (2, 3, 0))
    assert builtin.dataset_code(tmp_path, "tiny") == "unrecorded"  # nothing made yet
    path = builtin.dataset_dir(tmp_path, "tiny")
    info = json.loads((path / "bench_dataset.json").read_text())
    assert info == {"demos": 2, "autonomous": 3, "seed": 0, "code": compare.code_version()}
    assert builtin.dataset_code(tmp_path, "tiny") == info["code"]
    (path / "bench_dataset.json").unlink()
    builtin.dataset_dir(tmp_path, "tiny")  # an existing dataset is kept as it is, not made again
    assert builtin.dataset_code(tmp_path, "tiny") == "unrecorded"


def test_a_qtransformer_result_from_before_the_presets_prior_is_trained_again(tmp_path):
    # The `builtin` backbone trains a BC prior now (--prior auto): an older Q-Transformer result (no
    # "prior" key) is not reused as today's; BC's and the paper row's (both without a prior) still are.
    for method, reused in (("qtransformer", False), ("qtransformer_paper", True), ("bc_demos", True), ("iql", True)):
        prior, weight = compare.prior_of(method)
        spec = {"method": method, "steps": 20, "eval_episodes": 1, "curve_points": 2, "prior": prior, "prior_weight": weight,
                "result": str(tmp_path / f"{method}.json")}
        Path(spec["result"]).write_text(json.dumps({k: spec[k] for k in ("method", "steps", "eval_episodes", "curve_points")}))
        assert (compare.finished(spec) is not None) == reused, method
    assert compare.prior_of("qtransformer") == ("auto", 0.03) and compare.prior_of("qt_no_mc_bound") == ("auto", 0.03)
    assert compare.prior_of("bc_demos") == ("none", None) and compare.prior_of("qtransformer_paper") == ("none", None)


def test_a_result_decoded_at_another_prior_weight_is_trained_again(tmp_path):
    # Results from before --prior-weight decoded their prior at 0.01; the `builtin` preset's is 0.03 now.
    prior, weight = compare.prior_of("qtransformer")
    spec = {"method": "qtransformer", "steps": 20, "eval_episodes": 1, "curve_points": 2, "prior": prior, "prior_weight": weight,
            "result": str(tmp_path / "qt.json")}
    base = {k: spec[k] for k in ("method", "steps", "eval_episodes", "curve_points", "prior")}
    Path(spec["result"]).write_text(json.dumps(base))  # recorded no weight: 0.01
    assert compare.finished(spec) is None
    Path(spec["result"]).write_text(json.dumps(base | {"prior_weight": 0.01}))
    assert compare.finished(spec) is None
    Path(spec["result"]).write_text(json.dumps(base | {"prior_weight": 0.03}))
    assert compare.finished(spec) is not None
    assert compare.finished(spec | {"prior_weight": 0.01}) is None
