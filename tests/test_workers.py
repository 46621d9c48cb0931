"""Pool workers end with the process that started them (bench runs left behind kept cores busy)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from qtransformer.workers import process_pool

PARENT = """
import sys, time
from qtransformer.workers import process_pool
from tests.test_workers import record_pid_and_sleep
with process_pool(1) as pool:
    pool.submit(record_pid_and_sleep, sys.argv[1]).result()
"""


def record_pid_and_sleep(path: str) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(120)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited; only its entry waits to be reaped


def _initialised(path: str) -> None:
    Path(path).write_text("ran")


def test_a_worker_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    root = Path(__file__).resolve().parents[1]
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(pid_file)], cwd=root,
                              env={**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    try:
        deadline = time.time() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.time() < deadline and parent.poll() is None, "the worker never started"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 20  # the watcher looks every second; the task itself sleeps 120 s
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), "the worker outlived its killed parent"
    finally:
        parent.kill()


def test_the_callers_initializer_still_runs_in_each_worker(tmp_path: Path) -> None:
    flag = tmp_path / "init"
    with process_pool(1, initializer=_initialised, initargs=(str(flag),)) as pool:
        assert pool.submit(os.getpid).result() != os.getpid()
    assert flag.read_text() == "ran"
