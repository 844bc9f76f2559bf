"""Where this process runs: its device, its precision, and its place among torchrun ranks.

Under ``torchrun`` (or a multi-task SLURM job from submitit) the environment names the rank
and world size; the process group is initialised from it (NCCL for CUDA tensors, gloo for
CPU ones). A plain ``genloom train`` is rank 0 of
a world of one, and every rank check below holds trivially.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes files, logs progress and calls event hooks."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def select_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else is passed to ``torch.device``."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ValueError(f"device={spec!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={spec!r} but CUDA is not available here; use device=auto or cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def launched_ranks() -> tuple[int, int]:
    """``(rank, world_size)`` from the launcher's environment; ``(0, 1)`` without one.

    torchrun sets ``RANK`` and ``WORLD_SIZE``. A SLURM job started by submitit (Hydra's
    ``hydra/launcher=slurm``) with several tasks sets neither; submitit's own helper
    exports them (and the rendezvous address) from SLURM's variables.
    """
    if "RANK" not in os.environ and os.environ.get("SUBMITIT_EXECUTOR") == "slurm" \
            and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def join() -> None:
    """Join the process group torchrun's environment describes (once; idempotent).

    The group carries CPU tensors over gloo and, where CUDA exists, CUDA tensors over NCCL,
    so it can be joined before the config has chosen a device.
    """
    if dist.is_initialized() or launched_ranks()[1] == 1:
        return
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a plain return in one process)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def setup(device_spec: str = "auto") -> Placement:
    """Choose the device and, under torchrun, join the process group."""
    rank, world_size = launched_ranks()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))  # set by launched_ranks under submitit too
    device = select_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1:
        join()
        log.info("rank %d of %d on %s", rank, world_size, device)
    return Placement(device, rank, world_size, local_rank)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA under ``precision=auto``; fp32 elsewhere unless asked."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"trainer.precision={precision!r}; use auto, fp32 or bf16")
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def all_reduce_weighted_mean(
    totals: dict[str, float], weights: dict[str, float], placement: Placement
) -> dict[str, float]:
    """``sum(value * weight) / sum(weight)`` per key, the sums taken across ranks.

    ``totals`` holds each key's ``sum(value * weight)`` on this rank, ``weights`` its
    ``sum(weight)``; a key whose weights sum to 0 scores 0.
    """
    keys = sorted(totals)
    if placement.distributed:
        packed = torch.tensor(
            [totals[k] for k in keys] + [weights[k] for k in keys], dtype=torch.float64,
            device=placement.device,
        )
        dist.all_reduce(packed)
        values = packed.tolist()
        totals = dict(zip(keys, values[: len(keys)], strict=True))
        weights = dict(zip(keys, values[len(keys) :], strict=True))
    return {k: totals[k] / weights[k] if weights[k] else 0.0 for k in keys}


@contextlib.contextmanager
def main_first(placement: Placement) -> Iterator[None]:
    """Let rank 0 do something (build a cache, write a file) before the other ranks."""
    if placement.distributed and not placement.is_main:
        dist.barrier()
    yield
    if placement.distributed and placement.is_main:
        dist.barrier()
