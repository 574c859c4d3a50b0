"""Repeat tests on a busy or stalling host: pytest on the given tests N times beside CPU hogs, one record of every run.

    python -m harness.repeat                               # tests/http/test_load.py, 10 runs, 2 CPU hogs
    python -m harness.repeat --runs 3 --hogs 1 tests/http/test_under_load.py

What the load tests promise must hold on any host: this runs them as CI's machine may be (two cores, other
work beside them). Each run is a fresh pytest process (a fresh server); the figures each test records
(`record_property`) are kept with its outcome in harness/results/repeat-<date>.json. Passes when every run passed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.report import finish
from testkit.host import cpu_hogs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TESTS = ["tests/http/test_load.py"]


def one_run(tests: list[str]) -> dict:
    """One pytest process over `tests`: its outcome, seconds and each test's outcome and recorded figures."""
    report = Path(tempfile.mkdtemp(prefix="repeat-")) / "junit.xml"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                           "-o", "junit_family=legacy", *tests], cwd=REPO, capture_output=True, text=True)
    run = {"passed": proc.returncode == 0, "seconds": round(time.monotonic() - started, 1), "tests": {}}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            failed = case.find("failure") is not None or case.find("error") is not None
            props = {p.get("name"): p.get("value") for p in case.iter("property")}
            run["tests"][case.get("name")] = {"passed": not failed, **props}
    if not run["passed"]:
        run["output_tail"] = proc.stdout[-4000:].replace(f"{REPO}/", "")  # no machine's paths in the record
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tests", nargs="*", default=DEFAULT_TESTS, help="pytest paths or node ids")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--hogs", type=int, default=2, help="processes each keeping one core busy during the runs")
    parser.add_argument("--out", help="JSON results file (default harness/results/repeat-<date>.json)")
    args = parser.parse_args(argv)
    runs = []
    with cpu_hogs(args.hogs):
        for i in range(args.runs):
            runs.append(one_run(args.tests))
            print(f"run {i + 1}/{args.runs}: {'passed' if runs[-1]['passed'] else 'FAILED'} in {runs[-1]['seconds']} s",
                  flush=True)
    passed = sum(r["passed"] for r in runs)
    result = {"tests": args.tests, "hogs": args.hogs, "runs": runs, "passed_runs": passed,
              "checks": {f"{args.runs} of {args.runs} runs passed": passed == args.runs}}
    result["passed"] = all(result["checks"].values())
    return finish("repeat", result, args.out, hide=("runs",))


if __name__ == "__main__":
    sys.exit(main())
