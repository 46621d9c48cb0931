"""torchrun data parallelism: which process this is, the process group, and the rank-0 rule.

    torchrun --nproc-per-node 2 -m qtransformer train --dataset D --preset P

torchrun starts N copies of the command and gives each RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; `start` reads them and joins the process group (gloo on CPU, NCCL on CUDA). Without them
(a plain `qtransformer train`), or with WORLD_SIZE=1, nothing here does anything and the run is the
single-process run, bit for bit.

The rules, kept by train.py, algo/learner.py and data/sampler.py:
- `--batch-size` is the global batch: every rank draws the same global batch indices from the seeded
  stream (batch i is a function of (seed, i)) and keeps rows rank, rank + W, rank + 2W, ... of it, so a
  rank's rows are a pure function of (seed, rank, i) and the sampler's state stays one global counter;
- DistributedDataParallel averages the gradients of the equal-sized shards, which is the gradient of
  the global batch's mean loss; every rank then takes the same AdamW step and the same Polyak update of
  its target network, so the networks stay identical without ever being sent;
- only rank 0 logs, evaluates and writes checkpoints; the others wait at a barrier after each
  checkpoint, so once all ranks have passed step s its checkpoint is complete on disk;
- an error on one rank ends that process with the rank's message and a non-zero exit; torchrun then
  stops the others. A rank stuck rather than failed is caught by the process group's timeout
  (`--dist-timeout-s`): the others' next collective fails after it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .config import ConfigError

FAIL_RANK_ENV = "QTRANSFORMER_FAIL_RANK"  # a test hook: see fail_if_asked


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: rank in [0, world_size), the local rank on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when `start` created the process group (and `close` destroys it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, evaluates and writes checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()


def from_env() -> Ranks:
    """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them; a single process without them."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Ranks()
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as exc:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them): {exc}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world}: the rank must lie in [0, WORLD_SIZE) (torchrun sets them)")
    return Ranks(rank, world, local)


def rank_label() -> str:
    """'rank R: ' under torchrun with several processes (to prefix error messages), else ''."""
    try:
        ranks = from_env()
    except ValueError:
        return ""
    return f"rank {ranks.rank}: " if ranks.enabled else ""


def is_collective_failure(exc: BaseException) -> bool:
    """True for the error a rank gets when a collective fails because of another rank (it failed, was
    stopped, or did not answer within the timeout): torch.distributed's own errors, and gloo's and NCCL's
    RuntimeErrors, which name their library in the message."""
    if isinstance(exc, dist.DistError):
        return True
    return isinstance(exc, RuntimeError) and any(word in str(exc) for word in ("gloo/", "NCCL", "ProcessGroup"))


def check_batch_size(batch_size: int, world_size: int) -> None:
    """--batch-size is the global batch: it must split into equal shards, one per process."""
    if batch_size % world_size != 0:
        raise ConfigError(
            f"batch_size: {batch_size} (the global batch) does not split into {world_size} equal shards, one per process "
            f"(WORLD_SIZE={world_size}); pass a --batch-size divisible by {world_size}"
        )


def start(ranks: Ranks, device: torch.device, timeout_s: float) -> tuple[Ranks, torch.device]:
    """Join torchrun's process group (when there are several processes) and return (ranks, the device of
    this process). CUDA: 'cuda' without an index becomes cuda:LOCAL_RANK, and the backend NCCL; CPU:
    gloo. A process group made by the caller is used as it is (and not destroyed by `close`)."""
    if not ranks.enabled:
        return ranks, device
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(  # rendezvous at MASTER_ADDR:MASTER_PORT; NCCL bound to this process's GPU
            backend, timeout=timedelta(seconds=timeout_s), device_id=device if device.type == "cuda" else None,
        )
        owns = True
    if dist.get_world_size() != ranks.world_size or dist.get_rank() != ranks.rank:
        raise ValueError(f"the process group has rank {dist.get_rank()} of {dist.get_world_size()}, the environment "
                         f"RANK={ranks.rank} of WORLD_SIZE={ranks.world_size}")
    return Ranks(ranks.rank, ranks.world_size, ranks.local_rank, owns_group=owns), device


def fail_if_asked(ranks: Ranks, step: int) -> None:
    """Test hook, read here only: with QTRANSFORMER_FAIL_RANK=R, rank R raises after its first step
    (the others are then waiting in the next gradient all-reduce); with R:hang it stops responding
    instead (sleeps), so the others' collectives hit the process-group timeout. Unset: nothing."""
    value = os.environ.get(FAIL_RANK_ENV)
    if not value or step != 1:
        return
    rank, _, mode = value.partition(":")
    if rank.strip() != str(ranks.rank):
        return
    if mode == "hang":
        time.sleep(24 * 3600)
    raise RuntimeError(f"{FAIL_RANK_ENV}={value}: failure injected at step {step} (a test hook)")
