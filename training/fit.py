"""Training of MNIST members: one epoch, evaluation, distillation from a teacher, and the member cache."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from training import distributed
from training.augment import augment
from training.mnist_data import to_float
from training.mnist_model import MnistFC, Probabilities


def distillation_loss(logits, teacher_probs, labels, recipe):
    """Hinton et al. 2015: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels).

    The teacher gives probabilities (a committee's average), so its softened targets are p^(1/T), renormalised.
    """
    t, alpha = recipe["distill_temperature"], recipe["distill_alpha"]
    soft = teacher_probs.clamp_min(1e-12).log().div(t).softmax(1)
    kl = F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean") * t * t
    hard = F.cross_entropy(logits, labels, label_smoothing=recipe["label_smoothing"])
    return alpha * kl + (1 - alpha) * hard


def train(model, optimizer, scheduler, x, y, recipe, generator, max_steps=None, desc="train", teacher=None):
    """One epoch over in-memory uint8 tensors; returns (mean loss, accuracy, steps taken)."""
    model.train()
    bs = min(recipe["batch_size"], len(x))
    # Drop the last partial batch: it would get a noisier gradient and BatchNorm fails on a batch of one.
    steps = len(x) // bs if max_steps is None else min(len(x) // bs, max_steps)
    order = torch.randperm(len(x), generator=generator, device=generator.device)
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=0.5)
    for step in bar:
        idx = order[step * bs:(step + 1) * bs]
        xb = augment(to_float(x[idx]), generator, rotate=recipe["rotate"], scale=recipe["scale"],
                     translate=recipe["translate"], elastic_alpha=recipe["elastic_alpha"],
                     elastic_sigma=recipe["elastic_sigma"])
        # Under torchrun every rank draws the same batch and augmentation, then trains on its share.
        idx, xb = distributed.shard(idx), distributed.shard(xb)
        logits = model(xb)
        if teacher is None:
            loss = F.cross_entropy(logits, y[idx], label_smoothing=recipe["label_smoothing"])
        else:
            with torch.no_grad():  # the teacher sees the very same warped digits
                teacher_probs = teacher(xb)
            loss = distillation_loss(logits, teacher_probs, y[idx], recipe)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(idx)
        correct += (logits.argmax(1) == y[idx]).sum().item()
        seen += len(idx)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    return total_loss / max(seen, 1), correct / max(seen, 1), steps


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def test(model, x, y, batch_size: int = 2500) -> dict:
    """Loss, accuracy and predictions of `model` (an MnistFC or a Probabilities) on uint8 images x.

    Runs on the model's device; the outputs and predictions come back on the CPU.
    """
    model.eval()
    device = device_of(model)
    outputs = torch.cat([model(to_float(x[i:i + batch_size].to(device))).cpu() for i in range(0, len(x), batch_size)])
    y = y.cpu()
    # Probabilities returns probabilities, not logits; cross_entropy(log p) is the NLL of p since log p
    # is already normalised.
    log_probs = outputs.clamp_min(1e-12).log() if isinstance(model, Probabilities) else outputs
    predictions = outputs.argmax(1)
    return {"loss": F.cross_entropy(log_probs, y).item(),
            "accuracy": (predictions == y).float().mean().item(), "predictions": predictions,
            "outputs": outputs}


# What a member's weights depend on: the cache key. (ensemble is not in it: member i of a 3- and a 5-member
# recipe is the same network, trained once.)
MEMBER_KEYS = ("epochs", "batch_size", "lr", "hidden", "dropout", "batchnorm", "weight_decay", "label_smoothing",
               "rotate", "scale", "translate", "elastic_alpha", "elastic_sigma", "limit_train", "max_steps",
               "split_seed", "val_size", "world_size", "threads", "teacher", "distill_alpha", "distill_temperature",
               "device")


def member_key(recipe: dict, member: int) -> str:
    spec = {k: recipe.get(k) for k in MEMBER_KEYS}
    # init=2: members cached before the seed moved ahead of the network's construction are not reused.
    spec.update(seed=recipe["seed"] + member, torch=torch.__version__, init=2)
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=list).encode()).hexdigest()[:16]


def fit_member(member: int, recipe: dict, data: dict, history: list, cache_dir: Path | None = None,
               teacher: nn.Module | None = None):
    """Train one ensemble member from its own seed; return it restored to its best-validation weights.

    With a cache_dir, a member trained before with the same recipe, seed and torch is loaded instead of
    retrained (training is deterministic, so it would come out bit for bit the same).
    """
    seed = recipe["seed"] + member
    # Seed before the network is built: its initial weights must come from this member's seed, not from
    # whatever the process's generator held (which made member 0 depend on what ran before it).
    torch.manual_seed(seed)  # init + dropout
    np.random.seed(seed)
    random.seed(seed)
    device = torch.device(recipe["device"])
    # Built on the CPU, then moved: the initial weights are the same whatever the device.
    model = MnistFC(recipe["hidden"], recipe["dropout"], recipe["batchnorm"]).to(device)
    cached = Path(cache_dir) / f"member-{member_key(recipe, member)}.pt" if cache_dir else None
    if cached is not None and cached.is_file():
        saved = torch.load(cached, weights_only=True, map_location=device)
        model.load_state_dict(saved["state_dict"])
        history.extend({**h, "member": member} for h in saved["history"])
        print(f"member {member}: loaded from {cached} (val acc {saved['best_val_acc']:.4f})", flush=True)
        return model.eval(), saved["best_val_acc"]
    generator = torch.Generator(device).manual_seed(seed)  # batch order + augmentation, on the data's device
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    bs = min(recipe["batch_size"], len(data["x"]))
    total_steps = recipe["epochs"] * (len(data["x"]) // bs)
    if recipe["max_steps"]:
        total_steps = min(total_steps, recipe["max_steps"])
    # One-cycle: warm-up lets a high peak lr be used safely; the long anneal is what lifts final accuracy.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe["lr"], total_steps=total_steps)
    parallel = distributed.wrap(model)  # the model itself under plain `python -m training`
    best_acc, best_state, steps_done, rows = -1.0, None, 0, []
    for epoch in range(1, recipe["epochs"] + 1):
        if steps_done >= total_steps:
            break
        start = time.time()
        lr = optimizer.param_groups[0]["lr"]
        loss, acc, steps = train(parallel, optimizer, scheduler, data["x"], data["y"], recipe, generator,
                                 max_steps=total_steps - steps_done, desc=f"m{member} e{epoch}", teacher=teacher)
        steps_done += steps
        val = test(model, data["val_x"], data["val_y"])
        seconds = time.time() - start
        rows.append({"member": member, "epoch": epoch, "train_loss": loss, "train_acc": acc,
                     "val_loss": val["loss"], "val_acc": val["accuracy"], "lr": lr, "seconds": seconds})
        print(f"member {member} epoch {epoch:3d}  train loss {loss:.4f} acc {acc:.4f}  "
              f"val loss {val['loss']:.4f} acc {val['accuracy']:.4f}  lr {lr:.2e}  {seconds:.1f}s", flush=True)
        if val["accuracy"] > best_acc:  # keep the best-on-validation weights, never look at the test set
            best_acc, best_state = val["accuracy"], copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    history.extend(rows)
    if cached is not None and distributed.is_main():
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {k: v.cpu() for k, v in best_state.items()}, "history": rows, "best_val_acc": best_acc,
                    "recipe": {k: recipe.get(k) for k in MEMBER_KEYS}}, cached)
    return model.eval(), best_acc
