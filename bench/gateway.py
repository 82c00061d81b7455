"""The inference gateway's added latency, one request at a time: a chat completion (not streamed, and
streamed as 50 events) sent straight to an instant upstream and through `modeldex serve` in front of it,
and how late each streamed event reaches the client after the upstream sent it (a timed drip: events 2 ms
apart, each travelling alone).

    .venv/bin/python bench/gateway.py [--requests 2000]

The upstream (bench/instant_upstream.py) is as fast as this machine allows: a raw asyncio protocol on
uvloop answering a canned completion, or 50 events each stamped with the time it was written. Client: aiohttp, one connection kept
alive. Prints a markdown table; ratios and differences come from one run, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from modeldex_server import clean_env, cli, modeldex_binary
from procs import cpu_seconds, free_port, process_tree

EVENTS = 50
DRIP_MS = 2  # the timed drip's spacing of events, for how late each one arrives


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


OVERHEAD = "x-modeldex-overhead-duration-ms"
overheads: dict[bool, list[float]] = {False: [], True: []}  # modeldex's own time, by its header, per stream flag


async def timed(url: str, key: str | None, body: bytes, count: int, stream: bool) -> tuple[list[float], list[float]]:
    """Per-request seconds, and (streams) each event's delay from the upstream writing it to its arrival."""
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    durations: list[float] = []
    lags: list[float] = []
    async with aiohttp.ClientSession() as session:
        for index in range(count + count // 10):  # the first tenth warms up
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                if OVERHEAD in response.headers and index >= count // 10:
                    overheads[stream].append(float(response.headers[OVERHEAD]))
                if stream:
                    async for line in response.content:
                        if line.startswith(b"data: {"):
                            arrived = time.time()
                            if index >= count // 10:
                                lags.append(arrived - json.loads(line[6:])["sent"])
                else:
                    await response.read()
            if index >= count // 10:
                durations.append(time.perf_counter() - started)
    return durations, lags


async def throughput(url: str, key: str | None, body: bytes, total: int, connections: int) -> float:
    """Requests per second with `connections` kept-alive connections sending `total` requests in all."""
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
    remaining = [total]

    async def worker(session: aiohttp.ClientSession) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            async with session.post(url, data=body, headers=headers) as response:
                assert response.status == 200
                await response.read()

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        return total / (time.perf_counter() - started)


def server_cpu(root: int) -> float:
    """CPU seconds (user and system) of modeldex's processes: less disturbed by other load than latency."""
    return sum(cpu_seconds(pid) for pid in process_tree(root))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=0,
                        help="also measure throughput with this many connections (the client is Python: a "
                        "floor, not a ceiling; wrk in run.py is the better tool)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modeldex-bench-gateway-"))
    upstream_port, modeldex_port = free_port(), free_port()
    drip_port = free_port()
    script = str(Path(__file__).with_name("instant_upstream.py"))
    upstream = subprocess.Popen([sys.executable, script, str(upstream_port)])
    dripping = subprocess.Popen([sys.executable, script, str(drip_port), str(DRIP_MS)])
    url = f"sqlite:///{work / 'catalog.db'}"
    for name, port, model in (("instant", upstream_port, "bench-chat"), ("drip", drip_port, "bench-drip")):
        cli("upstreams", "add", name, "--base-url", f"http://127.0.0.1:{port}/v1", "--routing-only",
            "--database-url", url)
        cli("models", "add", model, "--database-url", url)
        cli("routes", "add", model, name, "--upstream-model", "m", "--database-url", url)
    key = cli("keys", "create", "bench", "--database-url", url).split()[0]
    log = open(work / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen([modeldex_binary(), "serve", "--port", str(modeldex_port), "--database-url", url],
                              env=clean_env(), stdout=log, stderr=subprocess.STDOUT, process_group=0)  # procs.py: why
    try:
        time.sleep(3)
        direct = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        through = f"http://127.0.0.1:{modeldex_port}/v1/chat/completions"
        rows = []
        for name, stream, count in (("chat, not streamed", False, args.requests),
                                    (f"chat, streamed ({EVENTS} events)", True, args.requests // 4)):
            body = json.dumps({"model": "bench-chat", "stream": stream,
                               "messages": [{"role": "user", "content": "hi"}]}).encode()
            straight, _ = uvloop.run(timed(direct, None, body, count, stream))
            cpu_before = server_cpu(server.pid)
            gateway, lags = uvloop.run(timed(through, key, body, count, stream))
            cpu_us = (server_cpu(server.pid) - cpu_before) / (count + count // 10) * 1e6
            rows.append((name, statistics.median(straight), percentile(straight, 0.99), statistics.median(gateway),
                         percentile(gateway, 0.99), lags, cpu_us))
        print(f"requests per scenario: {args.requests} (streamed: {args.requests // 4}), one at a time, "
              f"{os.cpu_count()} cores\n")
        print("| scenario | direct p50 | direct p99 | via modeldex p50 | via modeldex p99 | added p50 | added p99 "
              "| modeldex CPU per request |")
        print("|---|---|---|---|---|---|---|---|")
        for name, d50, d99, g50, g99, _lags, cpu_us in rows:
            print(f"| {name} | {d50 * 1e3:.3f} ms | {d99 * 1e3:.3f} ms | {g50 * 1e3:.3f} ms | {g99 * 1e3:.3f} ms "
                  f"| {(g50 - d50) * 1e3:.3f} ms | {(g99 - d99) * 1e3:.3f} ms | {cpu_us:.0f} µs |")
        for stream, measured in overheads.items():
            if measured:
                print(f"\nmodeldex's own time by its {OVERHEAD} header, {'streamed' if stream else 'not streamed'}: "
                      f"p50 {statistics.median(measured):.3f} ms, p99 {percentile(measured, 0.99):.3f} ms, "
                      f"max {max(measured):.3f} ms")
        if args.connections:
            body = json.dumps({"model": "bench-chat", "messages": [{"role": "user", "content": "hi"}]}).encode()
            straight = uvloop.run(throughput(direct, None, body, args.requests * 2, args.connections))
            gateway = uvloop.run(throughput(through, key, body, args.requests * 2, args.connections))
            print(f"\nthroughput, not streamed, {args.connections} connections: direct {straight:.0f} req/s, "
                  f"via modeldex {gateway:.0f} req/s")
        body = json.dumps({"model": "bench-drip", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        count = max(20, args.requests // 50)
        _, direct_lags = uvloop.run(timed(f"http://127.0.0.1:{drip_port}/v1/chat/completions", None, body.encode(),
                                          count, True))
        _, lags = uvloop.run(timed(through, key, body.encode(), count, True))
        for name, measured in (("straight", direct_lags), ("via modeldex", lags)):
            print(f"\nstreamed events ({DRIP_MS} ms apart), upstream write to client arrival, {name}: p50 "
                  f"{statistics.median(measured) * 1e3:.3f} ms, p99 {percentile(measured, 0.99) * 1e3:.3f} ms, "
                  f"max {max(measured) * 1e3:.3f} ms ({len(measured)} events)")
    finally:
        server.terminate()
        upstream.terminate()
        dripping.terminate()
        server.wait(timeout=15)
        upstream.wait(timeout=5)
        dripping.wait(timeout=5)
        log.close()


if __name__ == "__main__":
    main()
