"""Worker processes that end with the process that started them.

A `concurrent.futures` worker runs its current task to the end even when its parent has been killed
(SIGKILL, a closed terminal, an out-of-memory kill): a benchmark run of half an hour then keeps a
core busy for nothing. Every process pool in qtransformer and bench/ comes from `process_pool`, whose
workers watch their parent and exit as soon as it is gone.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Optional

PARENT_CHECK_S = 1.0


def process_pool(workers: int, initializer: Optional[Callable[..., Any]] = None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor of `workers` spawned processes (no fork: torch and MuJoCo state stay out of
    them) that exit when this process ends; `initializer(*initargs)` runs in each worker after that."""
    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_watch_parent,
                               initargs=(os.getpid(), initializer, initargs))


def _watch_parent(parent: int, initializer: Optional[Callable[..., Any]], initargs: tuple) -> None:
    def watch() -> None:
        while os.getppid() == parent:  # an orphan is re-parented: its parent id changes
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    if initializer is not None:
        initializer(*initargs)
