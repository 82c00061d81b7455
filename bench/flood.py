"""Connection flood: many cheap idle or half-sent connections from one address, and a normal client
from another; the verdict is the normal client's success rate.

    .venv/bin/python bench/flood.py --connections 2000 --requests 200
    .venv/bin/python bench/flood.py --url http://127.0.0.1:8000 --key sk-... --mode partial

Without --url it starts `modeldex serve` (a temporary SQLite catalog; extra flags after `--`) on a free
loopback port. The flood connects from --flood-address (127.0.0.2: all of 127.0.0.0/8 is loopback on
Linux) and holds each connection open, sending nothing (`idle`) or a request line and one header and then
a header byte every few seconds (`partial`, slowloris); whenever the server drops one, it reconnects at
once. Meanwhile the normal client, from 127.0.0.1, retrieves a model --requests times, each on a new
connection, and counts answers that are 200 within --timeout seconds. Exits non-zero below --min-success.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import free_port


class Flood:
    """`count` connections from `address`, held open and re-opened when dropped, on a loop of its own."""

    def __init__(self, host: str, port: int, address: str, count: int, mode: str) -> None:
        self.host, self.port, self.address, self.count, self.mode = host, port, address, count, mode
        self.open = 0
        self.peak = 0  # the most open at once since the last reset_peak()
        self.connects = 0
        self.drops = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def reset_peak(self) -> None:
        self.peak = self.open

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    async def _main(self) -> None:
        tasks = [asyncio.create_task(self._hold()) for _ in range(self.count)]
        while not self._stop.is_set():
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _hold(self) -> None:
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port, local_addr=(self.address, 0))
            except OSError:
                self.failures += 1
                await asyncio.sleep(0.05)
                continue
            self.connects += 1
            self.open += 1
            self.peak = max(self.peak, self.open)
            try:
                if self.mode == "partial":
                    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: flood\r\n")
                while not self._stop.is_set():
                    try:
                        if await asyncio.wait_for(reader.read(1024), 3) == b"":
                            break  # the server closed it
                    except TimeoutError:
                        if self.mode == "partial":
                            writer.write(b"X")  # one more byte of a header that never ends
                            await writer.drain()
            except OSError:
                pass
            finally:
                self.open -= 1
                if not self._stop.is_set():
                    self.drops += 1
                writer.close()


def normal_client(base: str, key: str, requests: int, timeout: float) -> tuple[int, list[float]]:
    """Successes among `requests` retrievals, each on a new connection (as new clients make), and their
    latencies. http.client, not a new httpx.Client each time: making one (its TLS context) cost ~30 ms of
    CPU, which the flooded server's CPUs paid too."""
    url = urlsplit(base)
    ok, latencies = 0, []
    for _ in range(requests):
        started = time.monotonic()
        connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=timeout)
        try:
            connection.request("GET", "/v1/models/MiniMax-M3", headers={"Authorization": f"Bearer {key}"})
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                ok += 1
                latencies.append(time.monotonic() - started)
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        time.sleep(0.01)
    return ok, latencies


def start_server(extra: list[str]) -> tuple[subprocess.Popen[bytes], str, str]:
    tmp = tempfile.mkdtemp(prefix="modeldex-flood-")
    env = {**os.environ, "MODELDEX_DATABASE_URL": f"sqlite:///{tmp}/catalog.db"}
    key = subprocess.run([sys.executable, "-m", "modeldex", "keys", "create", "flood-reader"], env=env,
                         check=True, capture_output=True, text=True).stdout.strip()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(Path(tmp) / "server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "modeldex", "serve", "--port", str(port),
                                   "--no-access-log", *extra], env=env, stdout=log, stderr=log,
                                  start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return server, base, key
        except httpx.HTTPError:
            time.sleep(0.1)
    os.killpg(server.pid, signal.SIGKILL)
    raise SystemExit(f"server did not become ready; see {tmp}/server.log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--key", help="a read key for --url")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--mode", choices=["idle", "partial"], default="idle")
    parser.add_argument("--flood-address", default="127.0.0.2")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds the normal client waits per request")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to let the flood build up first")
    parser.add_argument("--min-success", type=float, default=99.0, help="percent")
    parser.add_argument("serve_args", nargs="*", help="after --: flags for `modeldex serve`")
    args = parser.parse_args()

    server = None
    if args.url:
        base, key = args.url.rstrip("/"), args.key or ""
    else:
        server, base, key = start_server(args.serve_args)
    try:
        target = urlsplit(base)
        flood = Flood(target.hostname or "127.0.0.1", target.port or 80, args.flood_address, args.connections,
                      args.mode)
        flood.start()
        time.sleep(args.settle)
        held = flood.open
        flood.reset_peak()
        started = time.monotonic()
        ok, latencies = normal_client(base, key, args.requests, args.timeout)
        took = time.monotonic() - started
        flood.stop()
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    rate = 100.0 * ok / args.requests
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan")
    print(f"flood: {args.connections} {args.mode} connections from {args.flood_address} ({held} open when the "
          f"client started, up to {flood.peak} while it ran; {flood.connects} connects, {flood.drops} dropped by "
          f"the server, {flood.failures} refused)")
    print(f"normal client: {ok}/{args.requests} answered 200 ({rate:.1f} %) in {took:.1f} s; "
          f"p99 {p99 * 1000:.0f} ms")
    passed = rate >= args.min_success
    print("verdict: " + ("PASS" if passed else "FAIL"))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
