"""A/B: the same open-loop mix flood (fixed rate) against the old (79dd352) and new (HEAD) service, alternating."""
import asyncio, os, subprocess, sys, tempfile, time
import httpx
sys.path.insert(0, "/work/main")
from harness import payloads
from harness.driver import Driver

RATE, SECONDS, ROUNDS = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
servers = {"old": ("/tmp/wt-old", 3201), "new": ("/work/main", 3202)}
procs = []
for name, (cwd, port) in servers.items():
    env = {**os.environ, "BENTOML_HOME": tempfile.mkdtemp(), "BENTOML_DO_NOT_TRACK": "true"}
    procs.append(subprocess.Popen(["/work/main/.venv/bin/bentoml", "serve", ".", "--port", str(port)], cwd=cwd, env=env,
                                  stdout=open(f"/tmp/ab/{name}-flood.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
for _, port in servers.values():
    for _ in range(120):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200: break
        except httpx.HTTPError: pass
        time.sleep(0.5)
mix = payloads.request_mix()
try:
    for r in range(ROUNDS):
        order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
        for name in order:
            url = f"http://127.0.0.1:{servers[name][1]}"
            s = asyncio.run(Driver(url, mix, seed=2).run(SECONDS, rate=RATE, prewarm=32)).summary()
            print(f"round {r} {name}: 2xx/s {s['ok_per_s']}  adm p99 {s['ok_latency_ms']['p99']}  ref p50/p99 "
                  f"{s['refused_latency_ms']['p50']}/{s['refused_latency_ms']['p99']}  errors {s['transport_errors']}", flush=True)
            time.sleep(8)
finally:
    import signal
    for p in procs: os.killpg(p.pid, signal.SIGTERM)
