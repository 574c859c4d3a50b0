"""Command line: `python -m training temperature|mnist [flags]` (see --help of each)."""

import argparse
import importlib
import logging


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="task", required=True)
    for task, help_ in (("temperature", "thermometer units -> Celsius (linear and MLP)"),
                        ("mnist", "MNIST fully-connected digit classifier")):
        module = importlib.import_module(f"training.{task}")
        module.add_arguments(sub.add_parser(task, help=help_, description=module.__doc__))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript"):  # the ONNX exporter narrates every pass at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    importlib.import_module(f"training.{args.task}").main(args)


if __name__ == "__main__":
    main()
