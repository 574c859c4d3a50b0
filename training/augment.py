"""Batched, seeded tensor augmentation for MNIST: random affine + elastic distortion in one grid_sample."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _blur_matrix(size: int, sigma: float) -> torch.Tensor:
    """(size, size) matrix R such that f @ R is f blurred along its last axis (Gaussian, reflect borders)."""
    radius = min(int(math.ceil(3 * sigma)), size - 1)  # reflect padding needs radius < size
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    # Blurring the identity's rows gives the matrix of the (linear) blur, borders included.
    eye = F.pad(torch.eye(size).unsqueeze(1), (radius, radius), mode="reflect")
    return F.conv1d(eye, kernel).squeeze(1)


def elastic_field(n: int, size: int, alpha: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Smoothed random displacement field (N, 2, size, size) in pixels (Simard et al. 2003).

    Uniform noise in [-1, 1] per pixel and axis, smoothed with a Gaussian of std `sigma`, scaled by `alpha`:
    large sigma gives gentle, stroke-like warps, small sigma gives noise.
    """
    field = torch.rand(n, 2, size, size, generator=generator, device=generator.device) * 2 - 1
    # The blur is separable, so it is R^T @ field @ R: two small matmuls, ~10x faster than conv2d here.
    blur = _blur_matrix(size, sigma).to(generator.device)
    return (blur.T @ field @ blur) * alpha


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    rotate: float = 0.0,
    scale: float = 0.0,
    translate: float = 0.0,
    elastic_alpha: float = 0.0,
    elastic_sigma: float = 5.0,
) -> torch.Tensor:
    """Randomly warp a batch of images.

    x: float (N, 1, H, W) in [0, 1]. rotate: max degrees (±), scale: max relative change (±),
    translate: max shift in pixels (±), elastic_alpha: displacement strength in pixels (0 = off).
    Every random number comes from `generator`, so a seeded generator gives a reproducible batch; x and the
    generator must be on the same device (CPU or CUDA).
    Returns a new tensor of the same shape, still in [0, 1] (bilinear sampling never overshoots).
    """
    n, c, h, w = x.shape
    if rotate == 0 and scale == 0 and translate == 0 and elastic_alpha == 0:
        return x
    u = torch.rand(n, 4, generator=generator, device=generator.device) * 2 - 1  # one draw per image: angle, scale, dx, dy
    angle = u[:, 0] * math.radians(rotate)
    s = 1 + u[:, 1] * scale
    # theta maps output coordinates to input coordinates, so dividing by s enlarges the digit by s.
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    # Normalised coordinates span 2 units over W (or H) pixels (align_corners=False).
    tx, ty = u[:, 2] * translate * 2 / w, u[:, 3] * translate * 2 / h
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    if elastic_alpha > 0:
        assert h == w, "elastic field assumes square images"
        field = elastic_field(n, h, elastic_alpha, elastic_sigma, generator)
        # Pixels -> normalised units; grid's last dim is (x, y) like the field's channel dim.
        grid = grid + field.permute(0, 2, 3, 1) * (2 / w)
    # zeros padding = black background, which is what MNIST's border is.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
