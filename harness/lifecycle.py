"""From a training run to live traffic, under load: retrain, publish, shadow, canary, promote through the gate, roll back, and switch versions again and again without a restart or a lost request.

    python -m harness.lifecycle                                   # temperature-mlp, retrained (needs torch)
    python -m harness.lifecycle --model mnist-fc --new-version aebb56b29e874e21   # the committed quick network
    python -m harness.lifecycle --switches 2 --hold 2 --canary-requests 2000      # a short run

One replica (`bentoml serve` in its default configuration: a worker per CPU, SERVICE_ADMIN_TOKENS set, its serving
file a copy of models/serving.json) under closed-loop load the whole time: --clients HTTP clients on the typed
endpoint (keep-alive; each answer names its version and, in the x-worker header, its worker) and --grpc-clients gRPC
callers of ModelInfer. Phases, in order:

1. retrain: `python -m training temperature --model mlp --seed S` publishes a new version into the replica's model
   store (or --new-version names one the store or models/ has);
2. baseline (--phase s): the default version alone; answers/s and p99 for comparison;
3. shadow (--phase s): the new version shadows the default (share 1); its agreement from /metrics, and the
   answers' rate and p99 beside the baseline's (what shadowing costs the answers);
4. canary: the new version at weight 0.1 until --canary-requests answers came in; its share, and 50 clients with a
   routing key (X-Routing-Key) that each stay on one side;
5. promote: `python -m training promote MODEL NEW --serving-file <the replica's>`: the gate, then every worker
   follows the file; the time until answers name the new version;
6. roll back: the old version made the default again with the repository extension's load;
7. switches: --switches times there and back through load (alternately over HTTP and gRPC), then as many through
   the serving file; after each, --hold s of load; the workers' memory after each load switch;
8. a broken version (a copy whose files do not match its checksums) is refused; the default keeps answering.

Pass: no request lost (every HTTP answer 2xx, every gRPC call OK); every answer completed from 2 s after a switch
(after its call answered; after the file was written) on names the version switched to, and every worker answered
with it; the canary's share within 8-12 %; each keyed client on one side; the promotion gate passed; the workers'
memory at the end of the last load switch's hold within 10 % of the first one's to the same version (a leak per load
would grow it switch after switch); the broken version refused with 400. Results:
harness/results/lifecycle-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np

import artifacts
import artifacts.serving
from artifacts.serving import ModelServing
from harness.report import finish, service_settings
from service.v2.proto import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc
from testkit.driver import Driver
from testkit.grpc_load import Calls, closed_loop, infer_request
from testkit.payloads import Payload, as_json, mnist_test
from testkit.server import REPO, Server, start_service

ADMIN_TOKEN = "lifecycle-admin-token-0123456789"
SWITCHED_WITHIN_S = 2.0  # every answer completed this long after a switch names the new version
CANARY_WEIGHT = 0.1
KEYED_CLIENTS = 50


def payload(model: str) -> Payload:
    """The typed endpoint's request for `model` (its `model` choice)."""
    m = artifacts.model(model)
    if m.task == artifacts.TEMPERATURE:
        return Payload("temperature", "/temperature", "application/json",
                       as_json({"readings": [35.7, 55.9], "model": m.choice}))
    return Payload("digit", "/digit", "application/json", as_json({"pixels": mnist_test(1)[0][0].tolist(),
                                                                     "model": m.choice}), 1)


def grpc_request(model: str) -> bytes:
    if artifacts.model(model).task == artifacts.TEMPERATURE:
        return infer_request(model, "readings", "FP64", np.array([[35.7], [55.9]]))
    image = (mnist_test(1)[0][0].astype(np.float64) / 255).astype(np.float32).reshape(1, 1, 28, 28)
    return infer_request(model, "images", "FP32", image)


class Admin:
    """The replica's model repository, over HTTP and gRPC, with an admin token."""

    def __init__(self, server: Server):
        self.http = httpx.Client(base_url=server.url, timeout=120,
                                 headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        self.channel = grpc.insecure_channel(server.grpc_target)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def load(self, model: str, entry: ModelServing | None, over: str = "http") -> tuple[int, str]:
        """(status, error) of a load with `entry` as its config (None: the serving file's)."""
        config = None if entry is None else json.dumps(entry.as_dict())
        if over == "grpc":
            request = pb.RepositoryModelLoadRequest(model_name=model)
            if config is not None:
                request.parameters["config"].string_param = config
            try:
                self.stub.RepositoryModelLoad(request, timeout=120,
                                              metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),))
                return 200, ""
            except grpc.RpcError as e:
                return {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
                        grpc.StatusCode.FAILED_PRECONDITION: 409}.get(e.code(), 500), e.details()
        r = self.http.post(f"/v2/repository/models/{model}/load",
                           json={"parameters": {"config": config}} if config is not None else {})
        return r.status_code, r.json().get("error", "") if r.status_code != 200 else ""

    def metrics(self) -> str:
        return self.http.get("/metrics").text

    def close(self) -> None:
        self.http.close()
        self.channel.close()


class Traffic:
    """HTTP clients and gRPC callers in a closed loop for as long as the run lasts; every answer's (completion time,
    version, worker)."""

    def __init__(self, server: Server, model: str, clients: int, grpc_clients: int):
        self.t0 = time.monotonic()
        self.driver = Driver(server.url, [(payload(model), 1.0)], timeout=60, keep_headers=(b"x-worker",),
                             answer=lambda body, headers: (time.monotonic() - self.t0, version_of(body),
                                                           headers.get(b"x-worker", b"").decode()))
        self.calls, self.stop = Calls(), asyncio.Event()
        self.grpc_clients, self.clients, self.server, self.model = grpc_clients, clients, server, model

    def start(self) -> None:
        self.http = asyncio.create_task(self.driver.run(24 * 3600, clients=self.clients, drain=60))
        self.grpc = asyncio.create_task(closed_loop(
            self.server.grpc_target, grpc_request(self.model), self.grpc_clients, 24 * 3600, channels=4,
            answer=lambda raw: (time.monotonic() - self.t0, pb.ModelInferResponse.FromString(raw).model_version, ""),
            stop=self.stop, calls=self.calls, error_pause=0.05))

    def now(self) -> float:
        return time.monotonic() - self.t0

    def answers(self, start: float, end: float = float("inf")) -> list[tuple[float, str, str]]:
        """Every answer (HTTP and gRPC) completed in [start, end), as (time, version, worker: '' for gRPC)."""
        return [a for a in (*self.driver.answers, *self.calls.answers) if start <= a[0] < end]

    async def finish(self) -> dict:
        self.driver.stop()
        self.stop.set()
        records = await self.http
        await self.grpc
        return {"http_requests": len(records), "http_2xx": int(records.ok.sum()),
                "http_lost": int(len(records) - records.ok.sum()), "http_not_ok": records.not_ok(10),
                "grpc": {k: v for k, v in self.calls.summary().items() if k in ("calls", "ok", "codes", "errors")},
                "grpc_lost": len(self.calls.code) - self.calls.code.count("OK")}


def version_of(body: bytes) -> str | None:
    try:
        return json.loads(body).get("version")
    except ValueError:
        return None


def rate_and_p99(traffic: "Traffic", start: float, end: float) -> dict:
    """Answers per second (HTTP and gRPC) in [start, end), and the HTTP answers' p50 and p99 latency."""
    answers = traffic.answers(start, end)
    offset = traffic.driver.t0 - traffic.t0  # the driver's rows count from its own start
    latency = [done - sent for _, _, sent, done, status, _ in traffic.driver.rows
               if 200 <= status < 300 and start <= done + offset < end]
    ms = (lambda q: round(1000 * float(np.quantile(latency, q)), 2)) if latency else (lambda q: None)
    return {"answers_per_s": round(len(answers) / (end - start), 1), "answers": len(answers),
            "http_p50_ms": ms(0.5), "http_p99_ms": ms(0.99)}


def check_switch(traffic: Traffic, expected: str, done: float, until: float, workers: int) -> dict:
    """Every answer completed in [done + SWITCHED_WITHIN_S, until) names `expected`, and every worker answered."""
    after = traffic.answers(done + SWITCHED_WITHIN_S, until)
    wrong = [a for a in after if a[1] != expected]
    answered_by = {a[2] for a in after if a[2]}
    first = next((a[0] - done for a in sorted(traffic.answers(done - 30, until)) if a[0] >= done and a[1] == expected),
                 None)
    return {"answers_checked": len(after), "wrong_version": len(wrong), "workers_answering": len(answered_by),
            "every_worker": len(answered_by) >= workers, "first_new_answer_after_s": None if first is None
            else round(first, 3), "passed": bool(after) and not wrong and len(answered_by) >= workers}


async def hold(seconds: float) -> None:
    await asyncio.sleep(seconds)  # the traffic runs meanwhile: this phase's length


def retrain(model: str, seed: int, home: Path) -> str:
    """Train `model` again with `seed` (publishing it into `home`'s model store); its version."""
    kind = artifacts.model(model).choice
    out = subprocess.run([sys.executable, "-m", "training", "temperature", "--model", kind, "--seed", str(seed),
                          "--log-every", "1000000"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "BENTOML_HOME": str(home)})
    if out.returncode != 0:
        raise SystemExit(f"retraining failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    versions = artifacts_versions(model, home)
    return max(versions, key=lambda v: versions[v])  # the newest in the store


def artifacts_versions(model: str, home: Path) -> dict[str, str]:
    """version -> created_at of `model`'s versions in `home`'s model store (read in a subprocess: its own home)."""
    code = ("import json, bentoml; print(json.dumps({str(m.tag.version): str(m.info.creation_time) for m in "
            f"bentoml.models.list('{model}-onnx')}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "BENTOML_HOME": str(home)})
    return json.loads(out.stdout)


def promote(model: str, version: str, serving_file: Path, home: Path, data_root: str, force: bool = False) -> dict:
    """`python -m training promote` on the replica's serving file; with `force`, again with --force if the gate
    refuses (both outcomes kept)."""
    def gate(*extra: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "training", "promote", model, version, "--serving-file",
                              str(serving_file), "--data-root", data_root, *extra], cwd=REPO, capture_output=True,
                             text=True, env={**os.environ, "BENTOML_HOME": str(home)})
        return {"exit": out.returncode, "output": (out.stdout + out.stderr)[-1500:]}

    result = gate()
    if result["exit"] != 0 and force:
        result = {**gate("--force"), "refused_first": result}
    return result


BROKEN = "0" * 16


def store_broken_version(model: str, version: str, home: Path) -> str:
    """A store entry of `model` in `home` tagged BROKEN, holding `version`'s files: its checksums do not give its
    version (what a corrupted or hand-made entry looks like); its version."""
    code = f"""
import shutil, bentoml, artifacts
folder = artifacts.version_dir({model!r}, {version!r})
metadata = {{**artifacts.read_metadata(folder), "version": {BROKEN!r}}}
with bentoml.models.create("{model}-onnx:{BROKEN}", labels={{}}, metadata={{}}) as m:
    shutil.copy2(folder / "model.onnx", m.path_of("model.onnx"))
    artifacts.write_metadata(m.path, metadata)
"""
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env={**os.environ, "BENTOML_HOME": str(home)})
    return BROKEN


async def lifecycle(args: argparse.Namespace, server: Server, serving_file: Path, home: Path, new: str,
                    old: str) -> dict:
    model = args.model
    admin = Admin(server)
    workers = len(server.workers())
    traffic = Traffic(server, model, args.clients, args.grpc_clients)
    traffic.start()
    results: dict[str, Any] = {"model": model, "old_version": old, "new_version": new, "workers": workers}
    try:
        await hold(args.warmup)
        start = traffic.now()
        await hold(args.phase)
        results["baseline"] = {**rate_and_p99(traffic, start, traffic.now()),
                               "versions": sorted({a[1] for a in traffic.answers(start)})}

        status, _ = await asyncio.to_thread(admin.load, model, ModelServing(old, shadow=artifacts.serving.Shadow(new)))
        start = traffic.now()
        await hold(args.phase)
        end = traffic.now()
        text = await asyncio.to_thread(admin.metrics)
        agreement = {line.split("outcome=\"")[1].split("\"")[0]: float(line.rsplit(" ", 1)[1]) for line in
                     text.splitlines() if line.startswith("model_shadow_rows_total{") and f'shadow_version="{new}"' in line}
        results["shadow"] = {"load_status": status, **rate_and_p99(traffic, start, end),
                             "versions": sorted({a[1] for a in traffic.answers(start, end)}), "rows": agreement,
                             "agreement": round(agreement.get("agree", 0) / max(1.0, agreement.get("agree", 0)
                                                                                  + agreement.get("disagree", 0)), 4)}

        status, _ = await asyncio.to_thread(admin.load, model, ModelServing(
            old, canary=artifacts.serving.Canary(new, CANARY_WEIGHT)))
        start = traffic.now()
        while len(traffic.answers(start)) < args.canary_requests:
            await hold(0.2)
        canary = traffic.answers(start)[:args.canary_requests]
        keyed = await asyncio.to_thread(keyed_sides, server, model, new)
        share = sum(a[1] == new for a in canary) / len(canary)
        results["canary"] = {"load_status": status, "requests": len(canary), "share": round(share, 4),
                             "within_8_12_percent": 0.08 <= share <= 0.12, "keyed": keyed}

        results["promote"] = await asyncio.to_thread(promote, model, new, serving_file, home, args.data_root,
                                                     args.force_promote)
        written = traffic.now()  # the gate ran, then the file was written: the workers follow it from here
        await hold(args.hold)
        results["promote"]["switch"] = check_switch(traffic, new, written, traffic.now(), workers)

        status, _ = await asyncio.to_thread(admin.load, model, ModelServing(old))
        done = traffic.now()
        await hold(args.hold)
        results["rollback"] = {"load_status": status, **check_switch(traffic, old, done, traffic.now(), workers)}

        switches, memory = [], []  # memory: the workers' RSS at the end of each load switch's hold
        for i in range(args.switches):
            for target in (new, old):
                over = "grpc" if i % 2 else "http"
                status, error = await asyncio.to_thread(admin.load, model, ModelServing(target), over)
                done = traffic.now()
                await hold(args.hold)
                memory.append({"to": target, "rss_mib": round(sum(server.rss_mib()), 1)})  # after the hold
                switches.append({"via": f"load ({over})", "to": target, "status": status, "error": error,
                                 **check_switch(traffic, target, done, traffic.now(), workers)})
        for i in range(args.switches):
            for target in (new, old):
                serving = artifacts.serving.read(serving_file)
                artifacts.serving.write(serving.with_model(model, ModelServing(target)), serving_file)
                done = traffic.now()
                await hold(args.hold)
                switches.append({"via": "serving file", "to": target,
                                 **check_switch(traffic, target, done, traffic.now(), workers)})
        results["switches"] = switches
        results["memory_mib_after_load_switches"] = memory
        results["memory_growth"] = memory_growth(memory)

        broken = await asyncio.to_thread(store_broken_version, model, old, home)
        r = admin.http.post(f"/v2/repository/models/{model}/load",
                            json={"parameters": {"config": json.dumps({"default": broken})}})
        done = traffic.now()
        await hold(args.hold)
        results["broken"] = {"status": r.status_code, "error": r.json().get("error", ""),
                             **check_switch(traffic, old, done, traffic.now(), workers)}
    finally:
        results["traffic"] = await traffic.finish()
        admin.close()
    return results


def keyed_sides(server: Server, model: str, canary: str) -> dict:
    """KEYED_CLIENTS clients with a routing key each, five requests each: how many saw one version only, and how many
    of those the canary."""
    body = payload(model).body
    sides = {}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for k in range(KEYED_CLIENTS):
            seen = {http.post(payload(model).path, content=body, headers={
                "content-type": "application/json", "x-routing-key": f"client-{k}"}).json()["version"]
                for _ in range(5)}
            sides[f"client-{k}"] = sorted(seen)
    return {"clients": KEYED_CLIENTS, "one_side": sum(len(v) == 1 for v in sides.values()),
            "on_canary": sum(v == [canary] for v in sides.values())}


def memory_growth(memory: list[dict]) -> float:
    """The largest ratio of the workers' memory after the last load switch to a version over after the first one to
    it (1.0: no growth)."""
    ratios = []
    for target in {m["to"] for m in memory}:
        seen = [m["rss_mib"] for m in memory if m["to"] == target]
        ratios.append(seen[-1] / seen[0])
    return round(max(ratios, default=1.0), 4)


def passed(r: dict) -> bool:
    t = r["traffic"]
    return (t["http_lost"] == 0 and t["grpc_lost"] == 0 and r["shadow"]["load_status"] == 200
            and r["canary"]["load_status"] == 200 and r["canary"]["within_8_12_percent"]
            and r["canary"]["keyed"]["one_side"] == KEYED_CLIENTS and r["promote"]["exit"] == 0
            and r["promote"]["switch"]["passed"] and r["rollback"]["passed"] and r["rollback"]["load_status"] == 200
            and all(s["passed"] and s.get("status", 200) == 200 for s in r["switches"])
            and r["memory_growth"] <= 1.10
            and r["broken"]["status"] == 400 and r["broken"]["passed"])


def run(args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix="harness-lifecycle-home-"))
    serving_file = home / "serving.json"
    shutil.copy2(artifacts.serving.SERVING_FILE, serving_file)
    old = artifacts.serving.read(serving_file).models[args.model].default
    new = args.new_version or retrain(args.model, args.seed, home)
    env = {"SERVICE_ADMIN_TOKENS": ADMIN_TOKEN, "SERVICE_SERVING_FILE": str(serving_file)}
    server = start_service(home=home, env=env, workers=args.workers)
    try:
        server.wait_ready()
        results = asyncio.run(lifecycle(args, server, serving_file, home, new, old))
    finally:
        server.stop()
    results["passed"] = passed(results)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=artifacts.TEMPERATURE_MLP, choices=artifacts.MODEL_NAMES)
    ap.add_argument("--new-version", help="a version in models/ or the store (default: retrain, thermometers only)")
    ap.add_argument("--seed", type=int, default=7, help="the retraining's seed")
    ap.add_argument("--clients", type=int, default=16, help="closed-loop HTTP clients (default 16)")
    ap.add_argument("--grpc-clients", type=int, default=16, help="closed-loop gRPC callers (default 16)")
    ap.add_argument("--workers", type=int, default=None, help="pin the worker count (default: the service's own)")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--phase", type=float, default=5.0, help="seconds of the baseline and shadow phases")
    ap.add_argument("--hold", type=float, default=4.0, help=f"seconds of load after each switch (more than the "
                    f"{SWITCHED_WITHIN_S:g} s after which every answer must name the new version)")
    ap.add_argument("--switches", type=int, default=10, help="times there and back, by load and by the serving file")
    ap.add_argument("--canary-requests", type=int, default=10_000)
    ap.add_argument("--force-promote", action="store_true", help="when the gate refuses the new version (a worse "
                    "one), record the refusal and promote it with --force")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "mnist"),
                    help="MNIST, for the gate of a digit model")
    ap.add_argument("--out", help="results file (default harness/results/lifecycle-<date>.json)")
    args = ap.parse_args(argv)
    if args.hold <= SWITCHED_WITHIN_S + 0.5:
        ap.error(f"--hold must be more than {SWITCHED_WITHIN_S + 0.5:g} s: the answers after {SWITCHED_WITHIN_S:g} s "
                 "are what is checked")
    results = run(args)
    t = results["traffic"]
    print(json.dumps({k: results[k] for k in ("baseline", "shadow", "canary", "rollback", "broken")}, indent=1))
    print(f"promote: exit {results['promote']['exit']}, {results['promote']['switch']}")
    print(f"switches: {sum(s['passed'] for s in results['switches'])} of {len(results['switches'])} passed; "
          f"memory growth over the load switches: {results['memory_growth']}")
    print(f"traffic: HTTP {t['http_2xx']} of {t['http_requests']} answered 2xx, gRPC {t['grpc']['codes']}: "
          f"{'pass' if results['passed'] else 'FAIL'}")
    sys.exit(finish("lifecycle", {"command": "python -m harness.lifecycle" + "".join(f" {a}" for a in sys.argv[1:]),
                                  **results}, args.out, service=service_settings({}, args.workers)))


if __name__ == "__main__":
    main()
