"""A version's monitoring reference (artifacts/reference.py) from its model file and its validation data, written into its metadata.json.

    python -m training reference mnist-fc 73bbf6a747230b2a --data-root ../shared/data/mnist
    python -m training reference temperature-linear c57473f058ce8ddf

Digit models: the 5,000 validation images (the fixed split every recipe is selected on), run through the version's
model.onnx with ONNX Runtime. Thermometer models: the readings they are fit to. The version folder is found under
--models (models/ by default: the committed versions) or in the BentoML model store; the reference does not change
the version (its files do not change). Export runs the same computation for every new version.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import artifacts
from artifacts import reference
from training.readings import T_U

DIGITS_DATA = "validation split: 5,000 images of MNIST's training set (split seed {seed}), as the model answered them"
READINGS_DATA = "the 11 readings of the seed tutorial the thermometer is fit to"


def validation_images(data_root: str) -> np.ndarray:
    """The validation images as the model takes them: (5000, 1, 28, 28) float32 in [0, 1]."""
    from training.mnist_data import load_mnist, split_indices, to_float

    raw = load_mnist(data_root, download=False)
    _, val = split_indices(len(raw["train_x"]))
    return to_float(raw["train_x"][val]).numpy()


def digits_reference(onnx_path: Path, images: np.ndarray) -> dict:
    import onnxruntime as ort

    from training.mnist_data import SPLIT_SEED

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    probabilities = np.concatenate([session.run(None, {name: images[i:i + 1000]})[0]
                                    for i in range(0, len(images), 1000)])
    return reference.digits(images, probabilities, DIGITS_DATA.format(seed=SPLIT_SEED))


def readings_reference() -> dict:
    return reference.readings(T_U, READINGS_DATA)


def compute(model: artifacts.Model, folder: Path, data_root: str) -> dict:
    if model.task == artifacts.DIGITS:
        return digits_reference(folder / artifacts.FILES["onnx"], validation_images(data_root))
    return readings_reference()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=artifacts.MODEL_NAMES)
    p.add_argument("version")
    p.add_argument("--models", type=Path, default=artifacts.MODELS_DIR, help="where version folders lie (models/)")
    p.add_argument("--data-root", default="data", help="folder holding MNIST/raw/ (digit models)")


def main(args: argparse.Namespace) -> dict:
    folder = artifacts.version_dir(args.name, args.version, args.models)
    if not folder.is_dir():
        folder = artifacts.locate(args.name, args.version, "onnx", args.models)
    metadata = artifacts.verify(folder, only=(artifacts.FILES["onnx"],))
    metadata["reference"] = compute(artifacts.model(args.name), folder, args.data_root)
    artifacts.write_metadata(folder, metadata)
    artifacts.verify(folder, only=(artifacts.FILES["onnx"],))  # still the same version
    print(f"{args.name} {args.version}: reference written to {folder / artifacts.METADATA_FILE}: "
          f"{metadata['reference']['thresholds']}")
    return metadata["reference"]
