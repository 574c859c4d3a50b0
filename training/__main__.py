"""Command line: train and publish a model version, list the versions, make one the default.

    python -m training temperature|mnist [flags]     # a new version in the BentoML model store (--out: a folder too)
    python -m training versions NAME                 # every version, where it lives, its metric and roles
    python -m training promote NAME VERSION          # the default in models/serving.json, through a metric gate
    python -m training reference NAME VERSION        # a version's monitoring reference (export writes it)

See --help of each.
"""

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "temperature": "fit the thermometer models (linear and MLP) and publish them",
    "mnist": "train an MNIST fully-connected digit classifier and publish it",
    "versions": "list a model's versions: where they live, their metric and roles",
    "promote": "make a version the default in the serving file, if it measures up",
    "reference": "write a version's monitoring reference into its metadata.json",
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status (0 unless `versions` or `promote` says otherwise)."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command, help_ in COMMANDS.items():
        module = importlib.import_module(f"training.{command}")
        module.add_arguments(sub.add_parser(command, help=help_, description=module.__doc__,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript"):  # the ONNX exporter narrates every pass at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = importlib.import_module(f"training.{args.command}").main(args)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
