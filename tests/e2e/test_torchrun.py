"""torchrun data parallelism (distributed.py), end to end: two gloo processes train as one does at the
same global batch, checkpoints are written once, runs resume across world sizes, and a rank that fails
or stops responding ends the job. Each launch takes about 10 s on 2 busy cores."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from qtransformer.cli import main
from qtransformer.config import preset
from qtransformer.data import EpisodeStore
from qtransformer.envs.builtin_dataset import make_builtin_dataset

STEPS, BATCH = 20, 16
TENSOR_FILES = ("model/model.safetensors", "training_state/online.safetensors", "training_state/target.safetensors")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ds"
    EpisodeStore.create(path, make_builtin_dataset(demos=3, autonomous=5))
    return path


def train_args(dataset, out, steps=STEPS, *extra):
    return ["train", "--dataset", str(dataset), "--out", str(out), "--preset", "smoke", "--steps", str(steps), "--batch-size", str(BATCH),
            "--save-every", "10", "--keep-checkpoints", "0", "--no-progress", "--device", "cpu", "--threads", "1", "--eval-episodes", "0", *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, nproc=2, timeout=120, **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(free_port()), "-m", "qtransformer", *args]
    full_env = {k: v for k, v in os.environ.items() if k not in ("QTRANSFORMER_TRACEBACK", "QTRANSFORMER_FAIL_RANK")}
    full_env.update(OMP_NUM_THREADS="1", **env)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


def checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    """The same run ({STEPS} steps, global batch {BATCH}, checkpoints at 10 and 20) as one process and as two."""
    root = tmp_path_factory.mktemp("runs")
    before = torch.get_num_threads()
    assert main(train_args(dataset, root / "one")) == 0  # in this process: --threads 1 is set for the run, then restored
    assert torch.get_num_threads() == before
    two = checked(torchrun(train_args(dataset, root / "two")))
    return {"one": root / "one", "two": root / "two", "two_stdout": two.stdout}


def step_dir(run, step=STEPS):
    return run / "checkpoints" / f"step_{step:08d}"


def assert_like_one_process(a, b):
    """Every parameter of the model, online and target networks within 1e-6 (measured: at most 6e-8),
    but the attention's key bias: its gradient is zero in exact arithmetic (a shift of every key's
    score for a query leaves the softmax unchanged), so AdamW turns the float rounding of its gradient
    into steps of up to a few lr each, in any run; it may differ by STEPS x 3 x lr (measured: 3e-5)."""
    lr, C = 3e-4, preset("smoke").model.d_model
    for name in TENSOR_FILES:
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys()
        for k in x:
            if k.endswith("attn.qkv.bias"):
                torch.testing.assert_close(x[k][C : 2 * C], y[k][C : 2 * C], atol=STEPS * 3 * lr, rtol=0, msg=f"{name}: {k}")
                x[k], y[k] = torch.cat([x[k][:C], x[k][2 * C :]]), torch.cat([y[k][:C], y[k][2 * C :]])
            torch.testing.assert_close(x[k], y[k], atol=1e-6, rtol=0, msg=lambda m, k=k, name=name: f"{name}: {k}: {m}")


def assert_identical(a, b):
    for name in (*TENSOR_FILES, "training_state/optimizer.safetensors"):
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name


def resumable_copy(run, to, step=10):
    """A copy of `run` as it stood after its checkpoint at `step`: later checkpoints gone, `last` at `step`."""
    shutil.copytree(run, to)
    for p in (to / "checkpoints").glob("step_*"):
        if int(p.name[5:]) > step:
            shutil.rmtree(p)
    (to / "checkpoints" / "last").write_text(f"step_{step:08d}\n")
    return to


def test_two_processes_train_as_one_at_the_same_global_batch(runs):
    assert_like_one_process(step_dir(runs["one"]), step_dir(runs["two"]))
    # rank 0 logs the means over the ranks: the global batch's losses
    rows = {name: metric_rows(runs[name]) for name in ("one", "two")}
    assert [r["step"] for r in rows["two"]] == [r["step"] for r in rows["one"]] == [10, 20]
    for r1, r2 in zip(rows["one"], rows["two"], strict=True):
        for key in ("train/loss", "train/td_loss", "train/grad_norm"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-5), key


def metric_rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_checkpoints_are_written_once_by_rank_zero(runs):
    one, two = runs["one"], runs["two"]
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == sorted(p.name for p in (one / "checkpoints").iterdir()) == [
        "last", "step_00000010", "step_00000020"]  # no second writer's leftovers (.tmp-, .old-)
    for step in (10, 20):
        files = [sorted(str(p.relative_to(step_dir(r, step))) for p in step_dir(r, step).rglob("*")) for r in (one, two)]
        assert files[0] == files[1]
    assert (two / "checkpoints" / "last").read_text().strip() == "step_00000020"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert runs["two_stdout"].count("final checkpoint:") == 1


def test_resume_across_world_sizes(runs, tmp_path, dataset):
    # 2 processes from their own step 10: the same bits as 20 steps straight (CPU, same world size)
    again = resumable_copy(runs["two"], tmp_path / "two_again")
    checked(torchrun(train_args(dataset, again, STEPS, "--resume")))
    assert_identical(step_dir(again), step_dir(runs["two"]))
    assert [r["step"] for r in metric_rows(again)] == [10, 20]
    # 2 processes from a 1-process checkpoint, and 1 process from a 2-process one: the sampler's counter is global
    two_from_one = resumable_copy(runs["one"], tmp_path / "two_from_one")
    checked(torchrun(train_args(dataset, two_from_one, STEPS, "--resume")))
    assert_like_one_process(step_dir(two_from_one), step_dir(runs["one"]))
    one_from_two = resumable_copy(runs["two"], tmp_path / "one_from_two")
    assert main(train_args(dataset, one_from_two, STEPS, "--resume")) == 0
    assert_like_one_process(step_dir(one_from_two), step_dir(runs["two"]))


def test_a_failing_rank_ends_the_job_with_its_message(dataset, tmp_path):
    start = time.monotonic()
    result = torchrun(train_args(dataset, tmp_path / "run"), timeout=90, QTRANSFORMER_FAIL_RANK="1")
    assert result.returncode != 0
    assert time.monotonic() - start < 60  # not a hang: torchrun stopped rank 0, which was waiting in the all-reduce
    assert "qtransformer train: error: rank 1: unexpected RuntimeError: QTRANSFORMER_FAIL_RANK=1: failure injected" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_rank_that_stops_responding_times_the_job_out(dataset, tmp_path):
    start = time.monotonic()
    result = torchrun(train_args(dataset, tmp_path / "run", STEPS, "--dist-timeout-s", "5"), timeout=90, QTRANSFORMER_FAIL_RANK="1:hang")
    assert result.returncode != 0
    assert time.monotonic() - start < 60
    assert "qtransformer train: error: rank 0: a collective operation with the other processes failed" in result.stderr
