"""The GPU check: a model folder through the service's own loader on CUDA and on the CPU, parity on the MNIST test set and µs/image.

    python -m harness.cuda models/mnist-fc --json build/cuda.json      # exit 1 when CUDA disagrees with the CPU

Parity: the TorchScript file on the device against the same file on the CPU, over the 10,000 test images
(the largest |Δp| and how many answers change). Speed: µs/image at batch 1 and 64 for TorchScript on the
device, TorchScript on the CPU and ONNX Runtime on the CPU (one intra-op thread each, as training.compare
measures), numpy in and numpy out as the service calls them, so the device's figures include the copies.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import artifacts
from testkit.payloads import mnist_test
from service.inference import runtime
from service.settings import Settings
from training.compare import microseconds_per_image


def load(model_dir: Path, backend: str, device: str) -> runtime.LoadedModel:
    return runtime.load(model_dir, Settings(backend=backend, device=device, threads=1), device)


def outputs(model: runtime.LoadedModel, x: np.ndarray, chunk: int = 1000) -> np.ndarray:
    return np.concatenate([model.predict(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def parity(reference: np.ndarray, other: np.ndarray, labels: np.ndarray, atol: float) -> dict:
    """How far `other` is from `reference` (probabilities, one row per image), and each one's accuracy."""
    mismatches = int((reference.argmax(1) != other.argmax(1)).sum())
    diff = float(np.abs(reference.astype(np.float64) - other.astype(np.float64)).max())
    return {"images": len(labels), "max_abs_diff": diff, "atol": atol, "argmax_mismatches": mismatches,
            "accuracy_reference": float((reference.argmax(1) == labels).mean()),
            "accuracy_other": float((other.argmax(1) == labels).mean()),
            "ok": diff <= atol and mismatches == 0}


def check(model_dir: Path, device: str = "cuda", atol: float = 1e-4, images: int | None = None,
          seconds: float = 2.0) -> dict:
    meta = artifacts.read_metadata(model_dir)
    digits, labels = mnist_test(images, synthetic=False)
    x = (digits.astype(np.float32) / 255).reshape(-1, 1, 28, 28)
    on_cpu, on_device = load(model_dir, "torchscript", "cpu"), load(model_dir, "torchscript", device)
    report = {"model": artifacts.model_id(meta), "device": device_name(device),
              "metadata_test_accuracy": meta.get("metrics", {}).get("test_accuracy"),
              "parity": parity(outputs(on_cpu, x), outputs(on_device, x), labels, atol), "speed": []}
    runners = {f"torchscript {device}": on_device, "torchscript cpu": on_cpu}
    if (Path(model_dir) / artifacts.FILES["onnx"]).is_file():  # a folder sent to a GPU may carry model.pt alone
        runners["onnxruntime cpu"] = load(model_dir, "onnx", "cpu")
    for name, model in runners.items():
        for batch in (1, 64):
            us = microseconds_per_image(model.predict, np.ascontiguousarray(x[:batch]), seconds)  # numpy out: CUDA done
            report["speed"].append({"runner": name, "batch": batch, "us_per_image": us})
    return report


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"


def markdown(report: dict) -> str:
    p = report["parity"]
    lines = [f"{report['model']} on {report['device']}: {p['images']} test images, max |Δp| {p['max_abs_diff']:.2e} "
             f"(atol {p['atol']:g}), {p['argmax_mismatches']} answers differ; accuracy {p['accuracy_reference']:.4f} "
             f"on the CPU, {p['accuracy_other']:.4f} on the device (metadata: {report['metadata_test_accuracy']})",
             "", "| runner | µs/image batch 1 | µs/image batch 64 |", "| --- | ---: | ---: |"]
    for name in dict.fromkeys(row["runner"] for row in report["speed"]):
        cells = {row["batch"]: row["us_per_image"] for row in report["speed"] if row["runner"] == name}
        lines.append(f"| {name} | {cells[1]:.1f} | {cells[64]:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dirs", nargs="+", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest |Δp| allowed between device and CPU")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per runner and batch")
    parser.add_argument("--json", type=Path, help="write the reports here")
    args = parser.parse_args()
    reports = []
    for model_dir in args.model_dirs:
        reports.append(check(model_dir, args.device, args.atol, seconds=args.seconds))
        print(markdown(reports[-1]) + "\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reports": reports},
                                        indent=2))
    return 0 if all(r["parity"]["ok"] for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
