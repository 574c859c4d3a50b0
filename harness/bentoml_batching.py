"""BentoML's own adaptive batching behind a typed endpoint, against the service's in-process batcher: /digit under wrk.

    .venv/bin/python -m harness.bentoml_batching [--seconds 5] [--concurrency 1 16 64]

Why the service batches in process (service/inference/batching.py): see harness/variants/bentoml_batchable.py.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from harness import report, wrk
from testkit import payloads, server

VARIANT = "harness.variants.bentoml_batchable:BatchableDigits"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    digit = payloads.bench_payloads()["digit"]
    body = payloads.write_bodies(Path(tempfile.mkdtemp(prefix="bentoml-batching-")), {"digit": digit})["digit"]
    rows = []
    for side, target in (("service (service/inference/batching.py)", "."), ("BentoML batchable=True", VARIANT)):
        s = server.start_service(target)
        try:
            s.wait_ready()
            wrk.run(s.url, digit, body, 16, 2, side)  # warm-up
            for c in args.concurrency:
                r = wrk.run(s.url, digit, body, c, args.seconds, side, s.cpu_seconds)
                rows.append(r.as_dict())
                print(f"{side:30s} c={c:<3d} {r.rps:7.1f} 2xx/s  p50 {r.p50_ms:7.2f}  p99 {r.p99_ms:7.2f} ms  "
                      f"non-2xx {r.non_2xx}", flush=True)
        finally:
            s.stop()
    path = report.save("bentoml-batching", {"rows": rows}, args.out)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
