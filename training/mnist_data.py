"""MNIST as in-memory tensors: the files (md5-checked), the fixed validation split, and the model's input format."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision

import artifacts

VAL_SIZE = 5000
# The split seed is fixed (not --seed) so every recipe and every seed is judged on the same 5,000 images.
SPLIT_SEED = 20240917
DEFAULT_DATA_ROOT = "data"


def load_mnist(data_root: str, download: bool) -> dict:
    """Load all of MNIST as in-memory tensors (uint8 images, int64 labels) plus md5 sums of the raw files."""
    try:
        train = torchvision.datasets.MNIST(root=data_root, train=True, download=download)
        test = torchvision.datasets.MNIST(root=data_root, train=False, download=download)
    except Exception as exc:  # torchvision raises RuntimeError when missing, URLError/OSError when offline
        raise RuntimeError(
            f"MNIST files were not found under {Path(data_root).resolve()} (download={download}). "
            "Pass --data-root pointing at a folder containing MNIST/raw/ (the IDX files), "
            "or allow network access so they can be downloaded."
        ) from exc
    raw = Path(train.raw_folder)
    md5 = {}
    for url, expected in torchvision.datasets.MNIST.resources:
        gz = raw / os.path.basename(url)
        if gz.exists():  # the archives are optional once extracted; check them when present
            md5[gz.name] = artifacts.file_digest(gz, "md5")
            if md5[gz.name] != expected:
                raise RuntimeError(f"{gz} has md5 {md5[gz.name]}, expected {expected}: the file is corrupt")
        extracted = raw / gz.stem
        if extracted.exists():  # these are the bytes torchvision actually parsed
            md5[extracted.name] = artifacts.file_digest(extracted, "md5")
    return {"train_x": train.data, "train_y": train.targets, "test_x": test.data, "test_y": test.targets,
            "md5": md5}


def split_indices(n: int = 60000, val_size: int = VAL_SIZE, seed: int = SPLIT_SEED):
    """Deterministic (train_indices, val_indices) partition of range(n)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:], perm[:val_size]


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 1, 28, 28) float32 in [0, 1], the model's input format."""
    return x_uint8.unsqueeze(1).float().div_(255.0)
