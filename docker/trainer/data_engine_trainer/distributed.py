"""DistributedDataParallel plumbing: one process per visible GPU (torchrun), gloo on CPU.

A `train` started as one plain process relaunches itself under torchrun when more than one process
is wanted, so the launch command is the same on a laptop and on a 4-GPU Batch instance."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# On a machine without GPUs, how many CPU processes a `train` runs (exercises the DDP path on CPU).
CPU_PROCESSES_ENV = "DATA_ENGINE_TRAINER_CPU_PROCESSES"


def wanted_processes() -> int:
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return int(os.environ.get(CPU_PROCESSES_ENV, "1"))


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def relaunch_under_torchrun(processes: int) -> None:
    from torch.distributed.run import main as torchrun

    torchrun(["--standalone", f"--nproc-per-node={processes}", "-m", "data_engine_trainer", *sys.argv[1:]])


@dataclass(frozen=True)
class Processes:
    rank: int
    world_size: int
    device: torch.device

    @classmethod
    def start(cls) -> Processes:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        if world_size > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(rank=int(os.environ.get("RANK", "0")), world_size=world_size, device=device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (the Pipes extras: only rank 0 talks to Dagster)."""
        if self.world_size == 1:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def stop(self) -> None:
        if self.world_size > 1:
            dist.destroy_process_group()
