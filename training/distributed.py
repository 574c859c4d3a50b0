"""Optional data parallelism: DistributedDataParallel over gloo (CPU) when launched by torchrun, a no-op otherwise."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Join the process group torchrun set up; gloo because it runs on CPUs (and on GPUs too)."""
    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """DDP averages gradients across ranks, so each rank's shard adds up to the full batch's step."""
    if world_size() > 1:
        return torch.nn.parallel.DistributedDataParallel(model)
    return model


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's share of a batch that every rank drew identically (same seed, same order)."""
    return batch[rank()::world_size()] if world_size() > 1 else batch


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
