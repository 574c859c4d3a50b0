"""What one more version loaded side by side costs: each worker's memory and the server's start time, with the committed serving file and with one extra version of a model loaded beside its default.

    python -m harness.versions_cost                 # 3 starts of each configuration, alternating
    python -m harness.versions_cost --starts 1      # a quick look

Configurations: as committed (one version per model); mnist-fc's other committed version (the quick network) loaded
too (its `versions`); the quick network alone instead of the committee (what the committee itself costs: the
difference); temperature-mlp's other version loaded too. Each start is `bentoml serve` in its default configuration with
a fresh model store (versions imported from models/ on the first start of each configuration, not timed) and a
serving file naming the configuration: start time is process start to every worker listening; memory is each
worker's RSS once idle. Reported: the medians, and each configuration's difference from the committed one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import artifacts
import artifacts.serving
from artifacts.serving import ModelServing
from harness.report import finish, service_settings
from testkit.server import start_service


def configurations(folder: Path) -> dict[str, Path]:
    """name -> a serving file under `folder`."""
    served = artifacts.serving.read()
    mnist = served.models[artifacts.MNIST].default
    quick = next(v for v in artifacts.folder_versions(artifacts.MNIST) if v != mnist)
    mlp = served.models[artifacts.TEMPERATURE_MLP].default
    mlp_other = next(v for v in artifacts.folder_versions(artifacts.TEMPERATURE_MLP) if v != mlp)
    states = {
        "committed": served,
        f"+ mnist-fc {quick} (quick network)": served.with_model(artifacts.MNIST, ModelServing(mnist, versions=(quick,))),
        f"mnist-fc {quick} alone, not the committee": served.with_model(artifacts.MNIST, ModelServing(quick)),
        f"+ temperature-mlp {mlp_other}": served.with_model(artifacts.TEMPERATURE_MLP,
                                                            ModelServing(mlp, versions=(mlp_other,))),
    }
    paths = {}
    for i, (name, state) in enumerate(states.items()):
        paths[name] = folder / f"serving-{i}.json"
        artifacts.serving.write(state, paths[name])
    return paths


def one_start(serving_file: Path, home: Path) -> dict:
    server = start_service(home=home, env={"SERVICE_SERVING_FILE": str(serving_file)})
    try:
        seconds = server.wait_ready(poll=0.05)
        server.wait_idle()
        return {"start_s": round(seconds, 3), "worker_rss_mib": server.rss_mib()}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--out", help="results file (default harness/results/versions_cost-<date>.json)")
    args = ap.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="versions-cost-"))
    configs = configurations(folder)
    homes = {name: folder / f"home-{i}" for i, name in enumerate(configs)}
    for home in homes.values():
        home.mkdir()
    for name, path in configs.items():
        one_start(path, homes[name])  # imports the versions into the store: not timed
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    for i in range(args.starts):
        for name in (configs if i % 2 == 0 else reversed(configs)):
            runs[name].append(one_start(configs[name], homes[name]))
            print(f"start {i + 1} {name}: {runs[name][-1]}", flush=True)
    summary = {}
    for name, rows in runs.items():
        summary[name] = {"start_s": statistics.median(r["start_s"] for r in rows),
                         "worker_rss_mib": statistics.median(statistics.mean(r["worker_rss_mib"]) for r in rows)}
    base = summary["committed"]
    for name, row in summary.items():
        row["extra_start_s"] = round(row["start_s"] - base["start_s"], 3)
        row["extra_rss_mib_per_worker"] = round(row["worker_rss_mib"] - base["worker_rss_mib"], 1)
        print(f"{name:60s} start {row['start_s']:6.2f} s ({row['extra_start_s']:+.2f}), worker RSS "
              f"{row['worker_rss_mib']:7.1f} MiB ({row['extra_rss_mib_per_worker']:+.1f})", flush=True)
    sys.exit(finish("versions_cost", {"command": "python -m harness.versions_cost" + "".join(
        f" {a}" for a in sys.argv[1:]), "summary": summary, "runs": runs, "passed": True}, args.out,
        hide=("runs",), service=service_settings({}, None)))


if __name__ == "__main__":
    main()
