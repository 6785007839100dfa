"""Multi-process training: torch.distributed set-up and the few collectives the loop needs.

Launched by ``torchrun --nproc_per_node=N -m MachineUnlearningLib train|retrain|unlearn ...``,
every process runs the same command on the same plan (same seed, same cohort); the loop
(``training.loop.train``) then:

- cuts each epoch's steps into global batches of ``batch_size`` as one process would and gives
  rank r the steps ``r, r + N, r + 2N, ...`` of each batch (a deterministic, padding-free
  DistributedSampler over subjects: every rank takes the same number of optimiser steps, a
  rank whose share of a short last batch is empty runs an empty batch);
- draws every step's random choices (crop jitter, random labels) on every rank in the
  one-process order, so a rank's samples are exactly the one-process run's;
- scales each rank's loss by ``N / len(batch)``, so DistributedDataParallel's gradient mean is
  the one-process batch mean even when ranks hold different numbers of samples;
- agrees on cancelling (any rank sees the cancel file -> every rank stops at the same step), on
  the reported loss (summed over ranks) and on early stopping (rank 0 evaluates, broadcasts).

Rank 0 alone writes outputs and emits events (``app/cli.py`` gives other ranks a silent sink;
``commands/`` skip writing and evaluating there).

BatchNorm: on CUDA the layers become ``SyncBatchNorm`` (batch statistics over every rank's
samples, as one process computes them over its batch). PyTorch 2.13 has no SyncBatchNorm on CPU
(it raises for CPU tensors), so with gloo each rank normalises by its own samples and DDP
broadcasts rank 0's running statistics: a CPU run with ``batchnorm=train`` is DDP's usual
per-process BatchNorm, not the one-process batch. With ``batchnorm=frozen`` (BatchNorm in eval
mode) an N-process run equals the one-process run to float rounding
(``Testing/test_distributed.py``).
Backends: ``nccl`` for CUDA (each rank on ``cuda:LOCAL_RANK``), ``gloo`` for CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Imported before any process group exists, on purpose: this module's functions take
# ``group=group.WORLD`` as a default, evaluated at import. DDP's first use imports it (through
# torch._dynamo -> fsdp -> _shard); imported after init_process_group it would hold the WORLD
# group until interpreter finalization, so destroy_process_group could not stop gloo's threads
# and a rank could abort at exit (``Testing/test_distributed.py``, the gloo-threads test).
import torch.distributed.nn.functional  # noqa: F401

from MachineUnlearningLib.runtime.device import resolve_device
from MachineUnlearningLib.runtime.errors import InvalidInputError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run (world size 1 = a plain one-process run).

    Attributes:
        rank: global rank, 0..world_size-1; rank 0 writes outputs.
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def check_batch_size(self, batch_size: int) -> None:
        """Refuse a global batch smaller than the world (some rank would never have a sample)."""
        if self.world_size > batch_size:
            raise InvalidInputError(
                f"batch_size: {batch_size} leaves processes idle in a run of "
                f"{self.world_size} processes.",
                hint=f"Use a batch size of at least {self.world_size} (--set batch_size="
                f"{self.world_size} for train/retrain, --param batch_size={self.world_size} "
                "for unlearn).",
            )

    def shard(self, batch_length: int) -> range:
        """Indices of a global batch of ``batch_length`` steps that this rank takes."""
        return range(self.rank, batch_length, self.world_size)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any rank."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def sum(self, value: float) -> float:
        """The sum of ``value`` over ranks (float64), the same on every rank."""
        if not self.active:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return float(total.item())

    def from_main(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
        dist.broadcast(value, src=0)
        return bool(value.item() > 0)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``model`` itself in a one-process run; else DistributedDataParallel around it (which
        broadcasts rank 0's weights and buffers, then averages gradients in backward)."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def device(self, name: str) -> torch.device:
        """The device of this rank for a job's ``device`` (``auto`` | ``cpu`` | ``cuda``)."""
        if not self.active:
            return resolve_device(name)
        if name.startswith("cuda:"):
            raise InvalidInputError(
                f"device: {name} names one GPU, but {self.world_size} processes run.",
                hint="Use --device auto or cuda: each process takes cuda:LOCAL_RANK.",
            )
        chosen = resolve_device(name)
        return torch.device("cuda", self.local_rank) if chosen.type == "cuda" else chosen


def device_label(device: torch.device) -> str:
    """The device as a checkpoint records it: ``str(device)`` in a one-process run; the device
    type in a multi-process one (every rank has its own GPU), so the record matches the
    one-process run's ``cuda`` / ``cpu``."""
    return device.type if current().active else str(device)


def current() -> Distributed:
    """This process's :class:`Distributed` (world size 1 unless a process group is set up)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Distributed()
    return Distributed(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
    )


def launched_by_torchrun() -> bool:
    """True when torchrun (or another env:// launcher) started this process in a group > 1."""
    return all(v in os.environ for v in TORCHRUN_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def use_sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """On CUDA in a multi-process run: BatchNorm -> SyncBatchNorm (same parameters, buffers and
    state-dict names); unchanged elsewhere (CPU has no SyncBatchNorm in PyTorch 2.13)."""
    if current().active and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


@contextlib.contextmanager
def session(device_name: str) -> Iterator[Distributed]:
    """Join the torchrun process group for one command (a no-op in a one-process run or when
    the caller already set up a group, e.g. a test's file rendezvous); leave it afterwards."""
    if dist.is_available() and dist.is_initialized():
        yield current()
        return
    if not launched_by_torchrun():
        yield Distributed()
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    wants_cuda = device_name != "cpu" and torch.cuda.is_available()
    if wants_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if wants_cuda else "gloo", init_method="env://")
    try:
        yield current()
    finally:
        leave()


def leave() -> None:
    """Leave the process group: every rank waits for the others (``barrier``), then destroys it,
    which ends gloo's threads here, while the interpreter is fully alive (see the import of
    ``torch.distributed.nn.functional`` above for what used to keep the group alive)."""
    dist.barrier()
    dist.destroy_process_group()


def _collective_device() -> torch.device:
    """Where the scalar collectives' tensors live: the rank's GPU for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
