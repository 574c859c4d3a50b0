"""One server (this tree), open-loop mix flood at a fixed rate; prints the driver summary."""
import asyncio, os, subprocess, sys, tempfile, time, json, signal
import httpx
sys.path.insert(0, "/work/main")
from harness import payloads
from harness.driver import Driver
RATE, SECONDS = float(sys.argv[1]), float(sys.argv[2])
kind = sys.argv[3] if len(sys.argv) > 3 else "mix"
env = {**os.environ, "BENTOML_HOME": tempfile.mkdtemp(), "BENTOML_DO_NOT_TRACK": "true"}
p = subprocess.Popen(["/work/main/.venv/bin/bentoml", "serve", ".", "--port", "3203"], cwd="/work/main", env=env,
                     stdout=open("/tmp/ab/one.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
try:
    for _ in range(120):
        try:
            if httpx.get("http://127.0.0.1:3203/readyz").status_code == 200: break
        except httpx.HTTPError: pass
        time.sleep(0.5)
    mix = payloads.request_mix()
    import psutil, threading
    workers = [c for c in psutil.Process(p.pid).children(recursive=True) if "worker" in " ".join(c.cmdline())]
    spy = None
    if os.environ.get("SPY"):
        spy = subprocess.Popen(["/work/main/.venv/bin/py-spy", "record", "-r", "100", "-d", "12", "-p", str(workers[0].pid),
                                "-f", "raw", "-o", os.environ["SPY"], "--threads", "--nonblocking", "--idle"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu0 = workers[0].cpu_times(); t0 = time.time()
    s = asyncio.run(Driver("http://127.0.0.1:3203", mix, seed=2).run(SECONDS, rate=RATE, prewarm=32)).summary()
    cpu1 = workers[0].cpu_times(); dt = time.time() - t0
    print("worker cores: user %.2f sys %.2f" % ((cpu1.user - cpu0.user) / dt, (cpu1.system - cpu0.system) / dt))
    if spy: spy.wait()
    print(json.dumps({k: s[k] for k in ("ok_per_s", "ok_latency_ms", "refused_latency_ms")}))
finally:
    os.killpg(p.pid, signal.SIGTERM)
