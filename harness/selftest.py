"""Check that the load driver is cheap: open loop against a trivial local HTTP server, the driver's own CPU within a budget.

    python -m harness.selftest                          # 4,000 requests/s for 10 s, pass: <= 0.35 of one core
    python -m harness.selftest --rate 8000 --seconds 5 --poisson

The server (a subprocess: its CPU is not the driver's) answers every request with a fixed 200, or with a
429 for every `--refuse-every`-th one, so that refusals are counted as such.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

import httptools

from testkit.driver import Driver, go
from testkit.payloads import Payload
from testkit.server import free_port

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"
REFUSED = (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
           b"Content-Length: 18\r\n\r\n{\"error\":\"busy\"}  ")


class Trivial(asyncio.Protocol):
    count = 0

    def __init__(self, refuse_every: int):
        self.parser = httptools.HttpRequestParser(self)
        self.refuse_every = refuse_every

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        Trivial.count += 1
        self.transport.write(REFUSED if self.refuse_every and Trivial.count % self.refuse_every == 0 else OK)


async def serve(port: int, refuse_every: int) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: Trivial(refuse_every), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def start(port: int, refuse_every: int = 0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "harness.selftest", "--serve", str(port), "--refuse-every", str(refuse_every)])
    import socket

    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the trivial server did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=4000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--poisson", action="store_true")
    parser.add_argument("--clients", type=int, default=0, help="closed loop with this many clients instead")
    parser.add_argument("--max-cores", type=float, default=0.35)
    parser.add_argument("--refuse-every", type=int, default=0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        go(serve(args.serve, args.refuse_every))
        return 0
    port = free_port()
    server = start(port, args.refuse_every)
    try:
        ping = Payload("ping", "/ping", "application/json", b'{"readings":[35.7,55.9]}')
        driver = Driver(f"http://127.0.0.1:{port}", [(ping, 1.0)])
        records = go(driver.run(args.seconds, rate=None if args.clients else args.rate, clients=args.clients,
                                poisson=args.poisson, prewarm=8))
    finally:
        server.terminate()
        server.wait()
    summary = records.summary()
    print(json.dumps(summary, indent=1))
    cores = summary["client"]["cores"]
    ok = cores <= args.max_cores and summary["transport_errors"] == 0
    print(f"driver CPU {cores:.3f} of one core at {summary['requests'] / args.seconds:.0f} requests/s "
          f"(budget {args.max_cores}): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
