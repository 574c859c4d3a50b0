"""Fit the thermometer's unknown units to Celsius with a linear model and a small Tanh MLP, then publish both.

    python -m training temperature                       # both models, published to the BentoML model store
    python -m training temperature --seed 1 --out models # and placed in models/temperature-*/<version>/

Each export is a new version (a hash of its files) that nothing serves until `python -m training promote`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import artifacts
from training.readings import T_C, T_U, data_sha256
from training.reference import readings_reference

INPUT_SCALE = 0.1  # the seed trains on t_u * 0.1; the exported graph applies it, so clients send raw t_u

# Per-model defaults. The linear model needs enough plain SGD steps to reach the least-squares
# optimum (the seed's 3,000 stop short of it); the MLP trains faster with Adam.
DEFAULTS = {
    "linear": {"optimizer": "sgd", "lr": 1e-2, "epochs": 30_000},
    "mlp": {"optimizer": "adam", "lr": 1e-2, "epochs": 10_000},
}


class Thermometer(nn.Module):
    """Raw readings (N, 1) in the unknown unit -> degrees Celsius (N, 1); the input scaling is part of the model."""

    def __init__(self, kind: str):
        super().__init__()
        self.register_buffer("scale", torch.tensor(INPUT_SCALE, dtype=torch.float64))
        if kind == "linear":
            self.net = nn.Linear(1, 1)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(1, 13), nn.Tanh(), nn.Linear(13, 1))
        else:
            raise ValueError(f"unknown model kind {kind!r}")
        # float64 end to end: JSON numbers are doubles, and a ±1e4 reading through a float32
        # graph would already be off by more than the 1e-4 °C parity budget.
        self.double()

    def forward(self, readings: torch.Tensor) -> torch.Tensor:
        return self.net(readings * self.scale)


def dataset() -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(T_U, dtype=torch.float64).unsqueeze(1), torch.tensor(T_C, dtype=torch.float64).unsqueeze(1))


def closed_form() -> tuple[float, float]:
    """Least-squares line through the 11 points, on t_u * 0.1 (the optimum the linear model must reach)."""
    x = np.asarray(T_U) * INPUT_SCALE
    w, b = np.polyfit(x, np.asarray(T_C), 1)
    return float(w), float(b)


def split(n: int, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, optimizer: str, lr: float, epochs: int,
          log_every: int = 0, x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None) -> float:
    """Full-batch training (11 points); returns the final training MSE."""
    opt = make_optimizer(optimizer, model.parameters(), lr)
    loss_fn = nn.MSELoss()
    for epoch in range(1, epochs + 1):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if log_every and (epoch == 1 or epoch % log_every == 0):
            msg = f"  epoch {epoch:6d}  train loss {loss.item():.4f}"
            if x_val is not None:
                msg += f"  val loss {test(model, x_val, y_val):.4f}"
            print(msg)
    return test(model, x, y)


@torch.no_grad()
def test(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return nn.functional.mse_loss(model(x), y).item()


def fit(kind: str, args: argparse.Namespace) -> tuple[Thermometer, dict]:
    """Validation run (for reporting), then the final fit on all 11 points from the same seed."""
    cfg = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in DEFAULTS[kind].items()}
    x, y = dataset()
    train_idx, val_idx = split(len(x), args.val_points, args.seed)

    torch.manual_seed(args.seed)
    probe = Thermometer(kind)
    print(f"[{kind}] validation run: {len(train_idx)} train / {len(val_idx)} held-out points, {cfg}")
    train(probe, x[train_idx], y[train_idx], **cfg, log_every=args.log_every, x_val=x[val_idx], y_val=y[val_idx])
    val_mse = test(probe, x[val_idx], y[val_idx])

    torch.manual_seed(args.seed)
    model = Thermometer(kind)
    print(f"[{kind}] final fit on all {len(x)} points")
    start = time.perf_counter()
    train_mse = train(model, x, y, **cfg, log_every=args.log_every)
    metrics = {"train_mse": train_mse, "val_mse": val_mse, "val_points": len(val_idx),
               "train_seconds": round(time.perf_counter() - start, 3), **cfg}
    if kind == "linear":
        w, b = closed_form()
        metrics.update(weight=model.net.weight.item(), bias=model.net.bias.item(),
                       closed_form_weight=w, closed_form_bias=b)
    return model.eval(), metrics


def export(kind: str, model: Thermometer, metrics: dict, args: argparse.Namespace):
    """Publish the fitted model as a new version of temperature-<kind> (and place it under --out when given)."""
    # onnx and onnxruntime are needed only when exporting
    from training.export import export_model

    grid = torch.cat([torch.linspace(-1e4, 1e4, 2001, dtype=torch.float64),
                      torch.linspace(-100, 200, 3001, dtype=torch.float64),
                      torch.tensor(T_U, dtype=torch.float64)]).unsqueeze(1)
    recipe = {"model": kind, **{k: metrics[k] for k in DEFAULTS[kind]}, "val_points": args.val_points,
              "seed": args.seed}
    return export_model(
        model, {"linear": artifacts.TEMPERATURE_LINEAR, "mlp": artifacts.TEMPERATURE_MLP}[kind],
        Path(args.out) if args.out else None, publish=not args.no_publish,
        example=torch.tensor([[35.7], [55.9]], dtype=torch.float64),
        parity_inputs=grid, atol=1e-4, task="regression",
        input_spec={**artifacts.TEMPERATURE.input.as_dict(), "unit": "thermometer unit (t_u), raw"},
        output_spec={**artifacts.TEMPERATURE.output.as_dict(), "unit": "degree Celsius"},
        metrics=metrics, reference=lambda folder: readings_reference(),
        extra={"data": {"t_u": T_U, "t_c": T_C, "sha256": data_sha256(),
                        "source": "shared/seed; Deep Learning with PyTorch ch. 5"},
               "recipe": recipe, "seed": args.seed},
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=["linear", "mlp", "both"], default="both")
    p.add_argument("--epochs", type=int, default=None, help="default: linear 30000, mlp 10000")
    p.add_argument("--lr", type=float, default=None, help="default: 1e-2")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None, help="default: linear sgd, mlp adam")
    p.add_argument("--val-points", type=int, default=2, help="readings held out in the validation run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=5000)
    p.add_argument("--out", default=None,
                   help="also place each version in OUT/temperature-<model>/<version>/ (an existing version folder is "
                        "left as is); without it, versions go to the BentoML model store only")
    p.add_argument("--no-publish", action="store_true",
                   help="do not publish to the BentoML model store (needs --out: e.g. on a machine without BentoML)")
    p.add_argument("--no-export", action="store_true", help="fit and report only")


def main(args: argparse.Namespace) -> dict[str, dict]:
    """Fit the chosen models; publish each as a new version unless --no-export. Never changes what serves."""
    if args.no_publish and not args.out and not args.no_export:
        raise SystemExit("--no-publish needs --out: the versions would be kept nowhere")
    torch.use_deterministic_algorithms(True)
    kinds = ["linear", "mlp"] if args.model == "both" else [args.model]
    results, versions = {}, {}
    for kind in kinds:
        model, metrics = fit(kind, args)
        results[kind] = metrics
        if not args.no_export:
            versions[kind] = export(kind, model, metrics, args).version
    print("\nsummary")
    for kind, m in results.items():
        version = f" version {versions[kind]}" if kind in versions else ""
        line = f"  {kind:6s}{version} train MSE {m['train_mse']:.4f}  val MSE {m['val_mse']:.4f}"
        if kind == "linear":
            line += (f"  w {m['weight']:.5f} b {m['bias']:.5f}"
                     f"  (closed form w {m['closed_form_weight']:.5f} b {m['closed_form_bias']:.5f})")
        print(line)
    return results
