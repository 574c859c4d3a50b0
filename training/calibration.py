"""Temperature scaling of a classifier's probabilities (fitted on validation data) and its expected calibration error.

Guo et al. 2017: one scalar T rescales the log-probabilities, p' = softmax(log p / T). It never changes
which class wins (so not the accuracy), only how confident the answer is. Label smoothing, used in
training, makes the networks under-confident (a clear "7" at 0.97), so T < 1 is expected here.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def rescale(probs: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """softmax(log p / T): the probabilities with temperature T applied (T = 1 gives them back)."""
    return F.softmax(probs.clamp_min(1e-12).log() / temperature, dim=1)


def fit_temperature(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """The T that minimises the negative log-likelihood of `labels` (fitted on validation data only)."""
    log_probs = probs.clamp_min(1e-12).log().double()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(log_probs / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_t.detach().exp())


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict:
    """Expected calibration error (15 equal-width confidence bins) and the per-bin table behind it."""
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    rows, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        n = int(inside.sum())
        if n:
            acc, conf = float(correct[inside].mean()), float(confidence[inside].double().mean())
            ece += n / len(labels) * abs(acc - conf)
            rows.append({"low": float(lo), "high": float(hi), "count": n, "accuracy": acc, "confidence": conf})
    return {"ece": ece, "nll": float(F.nll_loss(probs.clamp_min(1e-12).log(), labels)), "bins": rows}


class Calibrated(nn.Module):
    """A probabilities model with a fitted temperature applied to its output (what gets exported and served)."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rescale(self.model(x), self.temperature)
