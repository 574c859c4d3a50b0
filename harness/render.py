"""Render one benchmark run's results (harness/results/bench-<date>.json) as docs/benchmarks.md and its latency-vs-throughput plot."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

PLOT = "benchmarks-latency.png"

GOALS = {
    "temperature": 0.5,   # /temperature: service 2xx/s >= 50 % of the baseline's at concurrency 16
    "digit": 2.0,         # /digit: service 2xx/s >= 2 x the baseline's at concurrency 64 (adaptive batching)
    "digit_tail": 3.0,    # /digit at concurrency 64: p99 <= 3 x p50
    "tail": 5.0,          # every endpoint at concurrency 16: p99 <= 5 x p50
    "batch": 0.3,         # /digits images/s >= 30 % of in-process ONNX Runtime images/s
    "cold_start_s": 5.0,  # bentoml serve -> first /readyz 200
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


def goals(results: dict) -> list[tuple[str, str, str, bool]]:
    """(goal, measured, target, met) for each goal this run measured."""
    table, out = results["table"], []
    refused = sum(r["non_2xx"] for r in table if r["side"] == "service")
    lost = sum(r["transport_errors"] for r in table if r["side"] == "service")
    out.append(("service: non-2xx answers / transport errors, whole matrix", f"{refused} / {lost}", "0 / 0",
                refused == 0 and lost == 0))
    for endpoint, c, goal in (("temperature", 16, GOALS["temperature"]), ("digit", 64, GOALS["digit"])):
        a, b = row(table, "service", endpoint, c), row(table, "baseline", endpoint, c)
        if a and b:
            ratio = a["rps"] / b["rps"] if b["rps"] else 0.0
            out.append((f"{endpoint}: service 2xx/s ÷ baseline 2xx/s, c={c}",
                        f"{a['rps']:.0f} ÷ {b['rps']:.0f} = {ratio:.2f}", f"≥ {goal:g}", ratio >= goal))
    a = row(table, "service", "digit", 64)
    if a:
        ratio = a["p99_ms"] / a["p50_ms"] if a["p50_ms"] else math.inf
        out.append(("digit: service p99 ÷ p50, c=64", f"{a['p99_ms']:.2f} ÷ {a['p50_ms']:.2f} ms = {ratio:.1f}",
                    f"≤ {GOALS['digit_tail']:g}", ratio <= GOALS["digit_tail"]))
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
        ax.set_xlabel("2xx answers/s")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("latency (ms, log scale)")
    axes[0][0].legend(fontsize=7)
    levels = "/".join(str(c) for c in sorted({r["concurrency"] for r in table}))
    fig.suptitle(f"latency vs throughput, {results['service']['workers']} worker(s) per side, concurrency {levels} "
                 f"({results['machine']['cores']} cores, wrk)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def configuration(service: dict) -> str:
    """The service's settings as measured, and what this run changed from the defaults."""
    settings = ", ".join(f"{k}={v}" for k, v in service["settings"].items())
    changed = [f"`--env {k}={v}`" for k, v in service.get("env", {}).items()]
    changed += [f"`--bentoml-config '{service['bentoml_config']}'`"] if service.get("bentoml_config") else []
    return (f"**Service configuration:** {service['workers']} worker(s); settings {settings}. "
            + (f"**Changed for this run:** {', '.join(changed)}." if changed else "The defaults: nothing changed for this run."))


def markdown(results: dict) -> str:
    m, table = results["machine"], results["table"]
    lines = [
        "# Benchmarks: the BentoML service against a bare Starlette baseline",
        "",
        "Generated by `python -m harness.bench` (see `harness/README.md`); do not edit by hand. One run:",
        "",
        "```bash",
        results["command"],
        "```",
        "",
        f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"load average at start {' '.join(map(str, m['loadavg_at_start']))}; {results['date']}; repo {m['git']}.  ",
        "**Versions:** " + ", ".join(f"{k} {val}" for k, val in m["versions"].items()) + ".  ",
        configuration(results["service"]) + "  ",
        "**Setup:** A = the service, `bentoml serve` in production mode; B = `harness/baseline.py`, the same ONNX "
        "files, session options and image preprocessing behind a bare Starlette app under uvicorn, as many workers. "
        f"Both run at once; wrk (1 thread, Lua script) drives one at a time for {results['duration_s']:g} s per cell, "
        f"{results['rounds']} round(s), the side that goes first alternating cell by cell. Figures are medians over "
        "rounds (max: the largest). Throughput counts 2xx answers only; latency percentiles are wrk's, of every answer.",
        "",
        "## Goals",
        "",
        "| goal | measured | target | met |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {g} | {meas} | {tgt} | {'yes' if ok else '**no**'} |" for g, meas, tgt, ok in goals(results)]
    lines += ["", "## Throughput and latency", "", f"![latency vs throughput]({PLOT})", "",
              "| endpoint | c | side | 2xx/s | images/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx | transport errors "
              "| server CPU ms/req | A ÷ B 2xx/s |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in table:
        other = row(table, "baseline", r["endpoint"], r["concurrency"])
        ratio = f"{r['rps'] / other['rps']:.2f}" if r["side"] == "service" and other and other["rps"] else ""
        images = fmt(r["images_per_s"]) if r["images_per_s"] else "–"
        lines.append(f"| {r['endpoint']} | {r['concurrency']} | {'A service' if r['side'] == 'service' else 'B baseline'} "
                     f"| {fmt(r['rps'])} | {images} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} "
                     f"| {r['max_ms']:.1f} | {r['non_2xx']} | {r['transport_errors']} | {r['server_cpu_ms_per_req']:.2f} | {ratio} |")
    same = results.get("same_answers", {})
    lines += ["", "Both sides gave the same answers (predictions equal, floats to 1e-6) for: "
              + ", ".join(f"{n} {'yes' if ok else '**NO**'}" for n, ok in same.items()) + "."]
    clients = [r["client_cores"] for r in table]
    lines += ["", f"**What the client costs:** wrk's own CPU time was {min(clients):.2f}–{max(clients):.2f} of a core "
              f"(median {statistics.median(clients):.2f}) during the runs above, taken from the same {m['cores']} cores "
              "as the servers. Server CPU ms/req is the CPU time of the whole server process tree divided by the answers."]
    lines += sections(results)
    lines += ["", "Why the service is built as it is, the levers that did not pay and what the remaining gaps are "
              "made of: [decisions/](decisions/README.md).", "", f"Whole run: {results['elapsed_s'] / 60:.1f} minutes.", ""]
    return "\n".join(lines)


def sections(results: dict) -> list[str]:
    """Compute floor, cold start, memory, soak and profiles (each when measured)."""
    lines = ["", "## Compute floor: ONNX Runtime in-process", "",
             "The same MNIST model and session options, no HTTP and no JSON: a float32 batch in, probabilities out.", "",
             "| batch | intra-op threads | images/s |", "| ---: | --- | ---: |"]
    lines += [f"| {f['batch']} | {f['threads'] or 'default (one per core)'} | {fmt(f['images_per_s'])} |" for f in results["floor"]]
    cold = results.get("cold_start", {})
    if cold:
        names = list(results["same_answers"])
        lines += ["", "## Cold start", "", "Process start to the first `GET /readyz` 200 (polled every 20 ms), then the first "
                  "request to each endpoint, in that order, with nothing warmed up.", "",
                  "| side | model store | trial | ready s | " + " | ".join(f"first {n} ms" for n in names) + " |",
                  "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in names) + " |"]
        for side, kinds in cold.items():
            for kind, trials in kinds.items():
                for i, t in enumerate(trials, 1):
                    store = "empty (imports the models)" if kind == "empty_store" else "populated"
                    store = store if side == "service" else "– (reads models/)"
                    lines.append(f"| {side} | {store} | {i} | {t['ready_s']:.2f} | "
                                 + " | ".join(f"{ms:.1f}" for ms in t["first_request_ms"].values()) + " |")
    mem = results.get("memory", {})
    if mem:
        mib = lambda v: ", ".join(f"{x:.1f}" for x in v) if v else "–"  # noqa: E731 - one figure per worker
        lines += ["", "## Memory (RSS per worker, MiB)", "", "| side | idle after start | after the load matrix | after the soak |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {side} | {mib(r.get('idle_rss_mib'))} | {mib(r.get('after_load_rss_mib'))} | {mib(r.get('after_soak_rss_mib'))} |"
                  for side, r in mem.items()]
    soak = results.get("soak")
    if soak:
        a, tree = soak["all"], soak["memory"]["tree_mib"]
        lines += ["", f"**Soak** (`harness/soak.py`): {soak['seconds']:g} s after {soak['warmup_s']:g} s of warm-up, the "
                  f"request mix open loop at {soak['rate_per_s']:g} requests/s ({100 * soak['fraction_of_capacity']:.0f} % of "
                  f"the {soak['capacity']['ok_per_s'] if soak['capacity'] else '?'} 2xx/s measured): {a['requests']} requests, "
                  f"{a['non_2xx']} non-2xx, {a['transport_errors']} transport errors, p99 {a['ok_latency_ms']['p99']} ms; "
                  f"process tree RSS {tree['after_warmup']} → {tree['end']} MiB ({100 * tree['growth_after_warmup']:+.1f} %); "
                  f"the driver took {a['client']['cores']} of a core.", "",
                  "| worker | RSS after warm-up | at the end | max | change | trend (least squares) |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for i, w in enumerate(soak["memory"]["workers"], 1):
            lines.append(f"| {i} | {w['after_warmup_mib']} | {w['end_mib']} | {w['max_mib']} | "
                         f"{w['end_mib'] - w['after_warmup_mib']:+.1f} MiB | {w['slope_mib_per_min']:+.3f} MiB/min |")
    for name, text in (results.get("profiles") or {}).items():
        lines += ["", f"## Where a worker's time goes: {name}", "", text]
    return lines


def write(results: dict, path: Path, peers: dict | None = None, workers: dict | None = None) -> None:
    """docs/benchmarks.md (and its plot) from a bench run, with the sections of a `harness.peers` run and of a worker-count
    run (`harness.bench --workers 1 2`) when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plot(results, path.parent / PLOT)
    path.write_text(markdown(results) + ("\n" + workers_section(workers) + "\n" if workers else "")
                    + ("\n" + peers_section(peers) + "\n" if peers else ""))


def section_head(title: str, made_by: str, results: dict, more: str = "") -> list[str]:
    """A section's title, the command of its run, and the machine it ran on (`more` appended to that line)."""
    m = results["machine"]
    return [f"## {title}", "", f"Generated by {made_by}; one run:", "", "```bash", results["command"], "```", "",
            f"**Machine:** {m['cpu']}, {m['cores']} cores; load average at start "
            f"{' '.join(map(str, m['loadavg_at_start']))}; {results['date']}; repo {m['git']}{more}.  "]


def workers_section(results: dict) -> str:
    """A worker-count run (harness/results/bench-workers-<date>.json) as a Markdown section for docs/benchmarks.md."""
    counts = results["workers"]
    few, most = min(counts), max(counts)
    lines = [
        *section_head("Workers: answers per second against the worker count",
                      "`python -m harness.bench --workers ...` (`harness/scaling.py`)", results,
                      f"; CPU hogs beside the run: {results.get('cpu_hogs', 0)}"),
        f"**Method:** one `bentoml serve .` per worker count ({', '.join(map(str, counts))}), the count pinned with "
        "`services.ThermoDigits.workers`, everything else the defaults; all running at once, wrk (1 thread, on the same "
        f"cores) driving one at a time for {results['duration_s']:g} s per cell, {results['rounds']} round(s), the order "
        "alternating cell by cell; medians over rounds. *Least share*: the smallest fraction of a run's answers one "
        "worker gave (from the access log).",
        "",
        "| endpoint | c | " + " | ".join(f"{side_name(w)} 2xx/s" for w in counts)
        + f" | {most} ÷ {few} | " + " | ".join(f"p99 ms ({w})" for w in counts) + f" | least share ({most}) |",
        "| --- | ---: | " + " | ".join("---:" for _ in counts) + " | ---: | " + " | ".join("---:" for _ in counts) + " | ---: |",
    ]
    runs = [r for r in results["runs"] if r["part"] == "matrix"]
    for e, c in dict.fromkeys((r["endpoint"], r["concurrency"]) for r in runs):
        matrix = [r for r in runs if (r["endpoint"], r["concurrency"]) == (e, c)]
        med = {w: statistics.median(r["rps"] for r in matrix if r["workers"] == w) for w in counts}
        p99 = {w: statistics.median(r["p99_ms"] for r in matrix if r["workers"] == w) for w in counts}
        share = min((r["least_share"] for r in matrix if r["workers"] == most and "least_share" in r), default=None)
        shown = "– (fewer connections than workers)" if c < most else "" if share is None else f"{share:.0%}"
        lines.append(f"| {e} | {c} | " + " | ".join(fmt(med[w]) for w in counts)
                     + f" | {med[most] / med[few]:.2f} | " + " | ".join(f"{p99[w]:.2f}" for w in counts)
                     + f" | {shown} |")
    rounds = [r for r in results["runs"] if r["part"] == "rounds"]
    if rounds:
        lines += ["", f"**{results['share_rounds']} rounds** of {results['share_seconds']:g} s, alternating, of the cells "
                  "that decide the default:", "",
                  f"| endpoint | c | {side_name(few)} 2xx/s (min–max) | {side_name(most)} 2xx/s (min–max) "
                  f"| rounds {most} ≥ {few} | least share ({most}), worst round |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for e, c in dict.fromkeys((r["endpoint"], r["concurrency"]) for r in rounds):
            mine = [r for r in rounds if (r["endpoint"], r["concurrency"]) == (e, c)]
            by = {w: [r["rps"] for r in mine if r["workers"] == w] for w in (few, most)}
            per_round = {}
            for r in mine:
                per_round.setdefault(r["round"], {})[r["workers"]] = r["rps"]
            wins = sum(1 for p in per_round.values() if p.get(most, 0) >= p.get(few, 0))
            share = min((r["least_share"] for r in mine if r["workers"] == most and "least_share" in r), default=None)
            lines.append(f"| {e} | {c} | {fmt(min(by[few]))}–{fmt(max(by[few]))} | {fmt(min(by[most]))}–{fmt(max(by[most]))} "
                         f"| {wins} of {len(per_round)} | {'' if share is None else f'{share:.0%}'} |")
    lines += ["", "| check | met |", "| --- | --- |"]
    lines += [f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in results["checks"].items()]
    mem = results.get("memory_after_mib", {})
    if mem:
        lines += ["", "Resident memory per worker after the run, MiB: "
                  + "; ".join(f"{name} {', '.join(f'{x:.0f}' for x in v)}" for name, v in mem.items()) + "."]
    return "\n".join(lines) + "\n"


def side_name(workers: int) -> str:
    return f"{workers} worker{'s' if workers > 1 else ''}"


PEERS = ("bentoml-docs", "litserve", "triton")  # harness/peers: the other serving stacks; the baseline is not one


def peer_goals(results: dict) -> list[tuple[str, str, str, bool]]:
    """(goal, measured, target, met) of a `python -m harness.peers` run: in each goal cell the service's 2xx/s is at
    least every peer's, and its p99 no worse than every peer's."""
    out = []
    for cell in (c for c in results["cells"] if c["goal"]):
        endpoint, c = cell["endpoint"], cell["concurrency"]
        ours = row(results["table"], "service", endpoint, c)
        for peer in (s for s in cell["sides"] if s in PEERS):
            theirs = row(results["table"], peer, endpoint, c)
            if ours and theirs:
                out.append((f"{endpoint} c={c}: service vs {peer}, 2xx/s", f"{ours['rps']:.0f} vs {theirs['rps']:.0f}",
                            "≥", ours["rps"] >= theirs["rps"]))
                out.append((f"{endpoint} c={c}: service vs {peer}, p99 ms", f"{ours['p99_ms']:.2f} vs {theirs['p99_ms']:.2f}",
                            "≤", ours["p99_ms"] <= theirs["p99_ms"]))
    return out


def peers_section(results: dict) -> str:
    """A `python -m harness.peers` run (harness/results/peers-<date>.json) as a Markdown section for docs/benchmarks.md."""
    table = results["table"]
    pins = "; ".join(f"**{name}** {', '.join(p['pins'])}" for name, p in results["peers"].items())
    lines = [
        *section_head("Beside other serving stacks", "`python -m harness.peers` (`harness/peers/`)", results),
        "**Sides:** *service*, `bentoml serve .` as configured; *baseline*, the bare Starlette app (`harness/baseline.py`); "
        "*bentoml-docs*, the same two endpoints written as BentoML's docs write a service (typed `@bentoml.api` methods, "
        "ONNX Runtime sessions made in `__init__`, no batching, no middleware); *litserve*, two LitAPIs on one LitServer, "
        "/digit batched (up to 64, 2 ms); *triton*, Triton's HTTP server through PyTriton with ONNX Runtime in the bound "
        "callables, dynamic batching for mnist-fc (up to 64, queue delay "
        f"{results.get('triton_queue_delay_us', 0)} µs), answering the same Open Inference Protocol v2 bodies. The peers use "
        "ONNX Runtime's default session options, each from its own venv with exact pins: " + pins + ".  ",
        "gRPC cells: each side's `inference.GRPCInferenceService/ModelInfer` with the same raw request (tritonclient's "
        "way), driven by `testkit/grpc_load.py` (grpc.aio, closed loop, its callers on "
        f"{results.get('grpc_channels', 8)} connections) in a process of its own.  ",
        f"**Method:** every side runs at once, on the same cores, as it starts by default; wrk (1 thread) drives "
        f"one side at a time for {results['duration_s']:g} s per cell after {results.get('warmup_s', 0):g} s of warm-up, "
        f"{results['rounds']} round(s), the order of sides reversed every other round and cell; the same body file goes to "
        "every side of a cell. Figures are medians over rounds (max: the largest). Throughput counts 2xx answers only; "
        "latency percentiles are wrk's, of every answer.",
        "",
        "| goal | measured | target | met |",
        "| --- | --- | :---: | --- |",
    ]
    lines += [f"| {g} | {meas} | {tgt} | {'yes' if ok else '**no**'} |" for g, meas, tgt, ok in peer_goals(results)]
    lines += ["", "| endpoint | path | c | side | 2xx/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx | transport errors "
              "| server CPU ms/req | service ÷ side 2xx/s |",
              "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for cell in results["cells"]:
        ours = row(table, "service", cell["endpoint"], cell["concurrency"])
        for side in cell["sides"]:
            r = row(table, side, cell["endpoint"], cell["concurrency"])
            if r is None:
                continue
            ratio = f"{ours['rps'] / r['rps']:.2f}" if side != "service" and ours and r["rps"] else ""
            lines.append(f"| {cell['endpoint']} | `{cell['path']}` | {cell['concurrency']} | {side} | {fmt(r['rps'])} "
                         f"| {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['non_2xx']} "
                         f"| {r['transport_errors']} | {r['server_cpu_ms_per_req']:.2f} | {ratio} |")
    pairs = []
    for cell in results["cells"]:
        if cell["endpoint"].startswith("grpc_"):
            http = row(table, "service", "v2_" + cell["endpoint"].removeprefix("grpc_"), cell["concurrency"])
            grpc = row(table, "service", cell["endpoint"], cell["concurrency"])
            if http and grpc:
                pairs.append(f"{cell['endpoint'].removeprefix('grpc_').replace('_', '-')} at {cell['concurrency']}: "
                             f"HTTP {fmt(http['rps'])} 2xx/s (p99 {http['p99_ms']:.2f} ms), gRPC {fmt(grpc['rps'])} "
                             f"(p99 {grpc['p99_ms']:.2f} ms)")
    if pairs:
        cores = {kind: sorted(r["client_cpu_s"] / r["seconds"] for r in results["runs"]
                              if r["endpoint"].startswith("grpc_") == (kind == "grpc") and r["seconds"])
                 for kind in ("grpc", "wrk")}
        spread = {k: f"{v[0]:.2f}–{v[-1]:.2f} (median {statistics.median(v):.2f})" for k, v in cores.items() if v}
        lines += ["", "The service over HTTP (v2 JSON, wrk) and over gRPC (raw tensors, the Python gRPC client on "
                  f"{results.get('grpc_channels', 8)} connections): " + "; ".join(pairs) + ". The two clients differ: "
                  f"wrk took {spread.get('wrk', '?')} of a core, the Python gRPC client {spread.get('grpc', '?')}, "
                  "from the same two cores as the servers."]
    lines += ["", "Where the service is behind a peer, and why: [decisions/bentoml-request-path.md](decisions/bentoml-request-path.md)."]
    same = results.get("same_answers", {})
    lines += ["", "Every side gave the service's answer (same fields, same digit, floats to 1e-5; v2: the outputs) before "
              "the load: " + "; ".join(f"{endpoint} {', '.join(s for s, ok in sides.items() if ok)}"
                                       for endpoint, sides in same.items()) + "."]
    mem = results.get("memory_mib", {})
    if mem:
        lines += ["", "Resident memory of each side's whole process tree, MiB, idle after start → after the load: "
                  + "; ".join(f"{side} {v['idle_tree']:.0f} → {v.get('after_load_tree', float('nan')):.0f}"
                              for side, v in mem.items()) + "."]
    idle = results.get("idle_cpu_cores", {})
    if idle:
        lines += ["", "CPU used with no load, of a core (it competes with the side under load): "
                  + "; ".join(f"{side} {v:.2f}" for side, v in idle.items()) + "."]
    return "\n".join(lines) + "\n"
