"""Metric sinks: metrics.jsonl always, TensorBoard when it is installed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional


class MetricLogger:
    def __init__(self, run_dir: Path, tensorboard: bool = True, resume_step: Optional[int] = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            # Rows written after the checkpoint we resume from are about to be written again: drop them.
            rows = [line for line in self.path.read_text().splitlines() if line.strip()]
            kept = [line for line in rows if json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = open(self.path, "a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:  # tensorboard is an optional extra
                self._tb = None

    def log(self, step: int, metrics: dict[str, float], prefix: Optional[str] = None) -> None:
        row = {f"{prefix}/{k}" if prefix else k: v for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, "time": time.time(), **row}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class NullLogger:
    """The logger of the processes that do not log (every rank but 0 under torchrun)."""

    def log(self, step: int, metrics: dict[str, float], prefix: Optional[str] = None) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
