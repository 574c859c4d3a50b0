"""Turn one run's results (benchmarks/results/latest.json) into docs/benchmarks.md and its latency-vs-throughput plot.

    .venv/bin/python -m benchmarks.report [benchmarks/results/latest.json]   # re-render without re-measuring
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLOT = "benchmarks-latency.png"

GOALS = {
    "throughput": 0.5,   # service req/s >= 50 % of the baseline's at concurrency 16 (temperature, digit)
    "tail": 5.0,         # p99 <= 5 x p50 at concurrency 16
    "batch": 0.3,        # /digits images/s >= 30 % of in-process ONNX Runtime images/s
    "cold_start_s": 5.0, # bentoml serve -> first /readyz 200
}


def same_answers(answers: dict[str, dict[str, bytes]]) -> dict[str, bool]:
    """Per endpoint: do both sides return the same predictions (floats to 1e-6)?"""
    def close(a, b) -> bool:
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
        if isinstance(a, float) or isinstance(b, float):
            return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
        return a == b

    service, baseline = answers["service"], answers["baseline"]
    return {n: close(json.loads(service[n]), json.loads(baseline[n])) for n in service}


def row(table: list[dict], side: str, endpoint: str, c: int) -> dict | None:
    return next((r for r in table if (r["side"], r["endpoint"], r["concurrency"]) == (side, endpoint, c)), None)


def goals(results: dict) -> list[tuple[str, str, str, bool | None]]:
    """(goal, measured, target, met) for each of the issue's goals that this run measured."""
    table, out = results["table"], []
    for endpoint in ("temperature", "digit"):
        a, b = row(table, "service", endpoint, 16), row(table, "baseline", endpoint, 16)
        if a and b:
            ratio = a["rps"] / b["rps"] if b["rps"] else 0.0
            out.append((f"{endpoint}: service req/s ÷ baseline req/s, c=16",
                        f"{a['rps']:.0f} ÷ {b['rps']:.0f} = {ratio:.2f}", f"≥ {GOALS['throughput']}", ratio >= GOALS["throughput"]))
    for r in table:
        if r["side"] == "service" and r["concurrency"] == 16:
            ratio = r["p99_ms"] / r["p50_ms"] if r["p50_ms"] else math.inf
            out.append((f"{r['endpoint']}: service p99 ÷ p50, c=16", f"{r['p99_ms']:.2f} ÷ {r['p50_ms']:.2f} ms = {ratio:.1f}",
                        f"≤ {GOALS['tail']:g}", ratio <= GOALS["tail"]))
    batch = [r for r in table if r["side"] == "service" and r["endpoint"] == "digits64"]
    floor = max((f["images_per_s"] for f in results["floor"] if f["batch"] == 256), default=None)
    if batch and floor:
        best = max(batch, key=lambda r: r["images_per_s"])
        ratio = best["images_per_s"] / floor
        out.append(("/digits (64 per request) images/s ÷ in-process ONNX Runtime at batch 256",
                    f"{best['images_per_s']:.0f} (c={best['concurrency']}) ÷ {floor:.0f} = {ratio:.2f}",
                    f"≥ {GOALS['batch']}", ratio >= GOALS["batch"]))
    cold = results.get("cold_start", {}).get("service", {}).get("warm")
    if cold:
        ready = statistics.median(t["ready_s"] for t in cold)
        out.append(("cold start: `bentoml serve` → first /readyz 200 (median)", f"{ready:.2f} s",
                    f"≤ {GOALS['cold_start_s']:g} s", ready <= GOALS["cold_start_s"]))
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = results["table"]
    endpoints = list(dict.fromkeys(r["endpoint"] for r in table))
    fig, axes = plt.subplots(1, len(endpoints), figsize=(4.2 * len(endpoints), 4), squeeze=False)
    colours = {"service": "tab:blue", "baseline": "tab:orange"}
    for ax, endpoint in zip(axes[0], endpoints):
        for side, colour in colours.items():
            rows = sorted((r for r in table if r["side"] == side and r["endpoint"] == endpoint), key=lambda r: r["concurrency"])
            x = [r["rps"] for r in rows]
            ax.plot(x, [r["p50_ms"] for r in rows], "o-", color=colour, label=f"{side} p50")
            ax.plot(x, [r["p99_ms"] for r in rows], "s--", color=colour, alpha=0.7, label=f"{side} p99")
            for r in rows:
                ax.annotate(f"c{r['concurrency']}", (r["rps"], r["p50_ms"]), textcoords="offset points",
                            xytext=(4, -10), fontsize=7, color=colour)
        ax.set_title(endpoint)
        ax.set_xlabel("requests/s")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("latency (ms, log scale)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"latency vs throughput, {results['workers']} worker(s) per side, concurrency 1/16/64 "
                 f"({results['machine']['cores']} cores, wrk)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def markdown(results: dict) -> str:
    m, table = results["machine"], results["table"]
    v = m["versions"]
    lines = [
        "# Benchmarks: the BentoML service against a bare Starlette baseline",
        "",
        "Generated by `benchmarks/run.py` (see `benchmarks/README.md`); do not edit by hand. One run:",
        "",
        "```bash",
        results["command"],
        "```",
        "",
        f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"load average at start {' '.join(m['loadavg_at_start'])}; {m['date']}; repo {m['git']}.  ",
        "**Versions:** " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".  ",
        f"**Setup:** {results['workers']} worker(s) on each side. A = the service, `bentoml serve` in production mode; "
        "B = `benchmarks/baseline.py`, the same ONNX files, session options and image preprocessing behind a bare "
        f"Starlette app under uvicorn. Both run at once; wrk (1 thread, Lua script) drives one at a time for "
        f"{results['duration_s']:g} s per cell, {results['rounds']} round(s), the side that goes first alternating "
        "cell by cell. Figures are medians over rounds (max: the largest)."
        + (f" Extra service configuration: `{results['bentoml_config']}`." if results.get("bentoml_config") else ""),
        "",
        "## Goals",
        "",
        "| goal | measured | target | met |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {g} | {meas} | {tgt} | {'yes' if ok else '**no**'} |" for g, meas, tgt, ok in goals(results)]
    lines += ["", "## Throughput and latency", "", f"![latency vs throughput]({PLOT})", "",
              "| endpoint | c | side | req/s | images/s | p50 ms | p90 ms | p99 ms | max ms | errors | server CPU ms/req | A ÷ B req/s |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in table:
        other = row(table, "baseline", r["endpoint"], r["concurrency"])
        ratio = f"{r['rps'] / other['rps']:.2f}" if r["side"] == "service" and other and other["rps"] else ""
        images = fmt(r["images_per_s"]) if r["images_per_s"] else "–"
        lines.append(f"| {r['endpoint']} | {r['concurrency']} | {'A service' if r['side'] == 'service' else 'B baseline'} "
                     f"| {fmt(r['rps'])} | {images} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} "
                     f"| {r['max_ms']:.1f} | {r['errors']} | {r['server_cpu_ms_per_req']:.2f} | {ratio} |")
    same = results.get("same_answers", {})
    lines += ["", "Both sides gave the same answers (predictions equal, floats to 1e-6) for: "
              + ", ".join(f"{n} {'yes' if ok else '**NO**'}" for n, ok in same.items()) + "."]
    clients = [r["client_cores"] for r in table]
    lines += ["", f"**What the client costs:** wrk's own CPU time was {min(clients):.2f}–{max(clients):.2f} of a core "
              f"(median {statistics.median(clients):.2f}) during the runs above, taken from the same {m['cores']} cores as the servers. "
              "Server CPU ms/req is the CPU time of the whole server process tree divided by the requests it answered."]

    lines += ["", "## Compute floor: ONNX Runtime in-process", "",
              "The same MNIST model and session options, no HTTP and no JSON: a float32 batch in, probabilities out.", "",
              "| batch | intra-op threads | images/s |", "| ---: | --- | ---: |"]
    lines += [f"| {f['batch']} | {f['threads'] or 'default (one per core)'} | {fmt(f['images_per_s'])} |" for f in results["floor"]]

    cold = results.get("cold_start", {})
    if cold:
        lines += ["", "## Cold start", "", "Process start to the first `GET /readyz` 200 (polled every 20 ms), then the first "
                  "request to each endpoint, in that order, with nothing warmed up.", "",
                  "| side | model store | trial | ready s | " + " | ".join(f"first {n} ms" for n in results["same_answers"]) + " |",
                  "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in results["same_answers"]) + " |"]
        for side, kinds in cold.items():
            for kind, trials in kinds.items():
                for i, t in enumerate(trials, 1):
                    store = "empty (imports the models)" if kind == "empty_store" else "populated"
                    store = store if side == "service" else "– (reads models/)"
                    lines.append(f"| {side} | {store} | {i} | {t['ready_s']:.2f} | "
                                 + " | ".join(f"{ms:.1f}" for ms in t["first_request_ms"].values()) + " |")

    mem = results.get("memory", {})
    if mem:
        lines += ["", "## Memory (RSS per worker, MiB)", "", "| side | idle after start | after the load matrix | after the soak |",
                  "| --- | --- | --- | --- |"]
        mib = lambda v: ", ".join(f"{x:.1f}" for x in v) if v else "–"  # noqa: E731 - one figure per worker
        for side, readings in mem.items():
            lines.append(f"| {side} | {mib(readings.get('idle_rss_mib'))} | {mib(readings.get('after_load_rss_mib'))} | "
                         f"{mib(readings.get('after_soak_rss_mib'))} |")
    soak = results.get("soak")
    if soak:
        lines += ["", f"**Soak:** {soak['seconds']:g} s of all four endpoints at once ({4} connections each, paced), "
                  f"{100 * soak['achieved_fraction']:.0f} % of the service's measured capacity (target "
                  f"{100 * soak['target_fraction']:.0f} %); "
                  + ", ".join(f"{n} {r['rps']:.0f} req/s p99 {r['p99_ms']:.1f} ms, {r['errors']} errors" for n, r in soak["results"].items())
                  + ".", "", "| worker | RSS after 1 min | at the end | max | change | trend (least squares) |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for i, w in enumerate(soak["growth"]["workers"], 1):
            lines.append(f"| {i} | {w['start_mib']} | {w['end_mib']} | {w['max_mib']} | {w['delta_mib']:+} MiB | "
                         f"{w['slope_mib_per_min']:+.3f} MiB/min |")

    for name, text in (results.get("profiles") or {}).items():
        lines += ["", f"## Where a worker's time goes: {name}", "", text]
    lines += ["", "What was changed to get these numbers, the levers that did not pay, and what the remaining gaps "
              "are made of: [benchmarks/README.md](../benchmarks/README.md#what-made-the-service-faster-and-what-is-left).",
              "", f"Whole run: {results['elapsed_s'] / 60:.1f} minutes.", ""]
    return "\n".join(lines)


def write(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    plot(results, path.parent / PLOT)
    path.write_text(markdown(results))


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "benchmarks" / "results" / "latest.json"
    write(json.loads(source.read_text()), REPO / "docs" / "benchmarks.md")
