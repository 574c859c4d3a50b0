"""Schema fuzzing of every endpoint with schemathesis, against a real `bentoml serve`.

    python -m harness.fuzz --cases 1000            # the long run (starts its own server)
    python -m harness.fuzz --cases 1000 --url http://127.0.0.1:3000

Runs ``schemathesis run <url>/docs.json`` with every check (`--checks all`: no 5xx, status codes,
content types and bodies as documented, schema-valid data accepted, invalid data refused), a fixed
seed, hooks from harness/st_hooks.py, and counts what was sent per endpoint. Exit status 0 only
when schemathesis found nothing and every documented operation was exercised.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness.report import save
from testkit.server import REPO, serving

SEED = 20261126


@dataclass
class FuzzResult:
    exit_code: int
    seconds: float
    sent: dict[str, dict[str, int]]  # "POST /digit" -> {"200": n, "400": n, ...}
    report: dict  # schemathesis' JSON report
    output: str  # schemathesis' console output
    operations: list[str] = field(default_factory=list)  # documented in /docs.json

    @property
    def generated(self) -> int:
        return int(self.report.get("test_cases", {}).get("generated", 0))

    @property
    def failures(self) -> list[dict]:
        return list(self.report.get("failures", [])) + list(self.report.get("errors", []))

    @property
    def server_errors(self) -> int:
        return sum(n for codes in self.sent.values() for code, n in codes.items() if code.startswith("5"))

    @property
    def unexercised(self) -> list[str]:
        return [op for op in self.operations if not sum(self.sent.get(op, {}).values())]

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.failures and not self.server_errors and not self.unexercised

    def per_endpoint(self) -> str:
        lines = [f"{'operation':<22} {'requests':>9}  by status"]
        for op in self.operations:
            codes = self.sent.get(op, {})
            lines.append(f"{op:<22} {sum(codes.values()):>9}  " + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items())))
        return "\n".join(lines)


def documented_operations(url: str) -> list[str]:
    doc = httpx.get(f"{url}/docs.json", timeout=10).json()
    return [f"{method.upper()} {path}" for path, item in doc["paths"].items() for method in item
            if method in ("get", "post", "put", "patch", "delete")]


def run(url: str, cases: int, seed: int = SEED, workers: int = 1, report_dir: str | None = None,
        extra: tuple[str, ...] = (), timeout: float | None = None) -> FuzzResult:
    """Fuzz the server at `url`: up to `cases` generated cases per operation and generation phase."""
    report_dir = Path(report_dir or tempfile.mkdtemp(prefix="fuzz-report-"))
    report_dir.mkdir(parents=True, exist_ok=True)
    counts_file = report_dir / "sent.json"
    json_report = report_dir / "schemathesis.json"
    st = Path(sys.executable).with_name("schemathesis")
    command = [
        str(st), "run", f"{url}/docs.json",
        "--checks", "all",
        "--max-examples", str(cases),
        "--seed", str(seed),
        "--workers", str(workers),
        "--generation-database", "none",  # same seed, same cases: no replay of earlier runs' examples
        "--request-timeout", "30",
        "--report", "json,junit", "--report-dir", str(report_dir), "--report-json-path", str(json_report),
        "--no-color",
        *extra,
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "harness.st_hooks", "FUZZ_COUNTS_FILE": str(counts_file),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    proc = subprocess.run(command, cwd=report_dir, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - started
    report = json.loads(json_report.read_text()) if json_report.exists() else {}
    sent = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    return FuzzResult(proc.returncode, seconds, sent, report, proc.stdout + proc.stderr, documented_operations(url))


def summary(result: FuzzResult, cases: int, seed: int) -> str:
    report = result.report
    return "\n".join([
        f"schemathesis {report.get('schemathesis_version', '?')}, --max-examples {cases}, --seed {seed}, "
        f"{result.seconds:.0f} s",
        f"generated test cases: {result.generated}; requests sent: {sum(sum(c.values()) for c in result.sent.values())}",
        result.per_endpoint(),
        f"5xx responses: {result.server_errors}",
        f"failures: {len(report.get('failures', []))} kinds, errors: {len(report.get('errors', []))}, "
        f"dropped by filter_failure (pixels above max_value; an upload field sent as a list of none or one): {report.get('filtered', 0)}",
        f"result: {'PASS' if result.ok else 'FAIL'}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1000, help="--max-examples per operation (default 1000)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--url", help="fuzz this running server instead of starting one")
    parser.add_argument("--report-dir", default=None, help="where schemathesis' reports go (default: a temp dir)")
    parser.add_argument("--out", help="JSON results file (default harness/results/fuzz-<date>.json)")
    args = parser.parse_args(argv)

    def go(url: str) -> FuzzResult:
        result = run(url, args.cases, args.seed, args.workers, args.report_dir)
        if not result.ok:
            print(result.output[-20000:])
        print(summary(result, args.cases, args.seed))
        return result

    alive = True
    if args.url:
        result = go(args.url)
    else:
        with serving() as server:
            result = go(server.url)
            alive = server.ready()
        print(f"server ready after the run: {alive}")
    report = result.report
    path = save("fuzz", {
        "schemathesis": report.get("schemathesis_version"), "max_examples": args.cases, "seed": args.seed,
        "seconds": round(result.seconds, 1), "generated_test_cases": result.generated,
        "requests_by_operation": result.sent, "server_errors_5xx": result.server_errors,
        "failures": report.get("failures", []), "errors": report.get("errors", []),
        "dropped_by_filter_failure": report.get("filtered", 0), "phases": report.get("phases"),
        "server_ready_after": alive, "passed": result.ok and alive,
    }, args.out)
    print(f"results: {path}")
    return 0 if result.ok and alive else 1


if __name__ == "__main__":
    sys.exit(main())
