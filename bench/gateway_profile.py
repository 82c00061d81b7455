"""Where the gateway's time per request goes: cProfile inside a live granian worker (started as `modeldex
serve` starts it, access log on) while a client sends chat completions one at a time through it to
bench/instant_upstream.py.

    .venv/bin/python bench/gateway_profile.py [--requests 3000] [--stream] [--top 40]

The worker's app is modeldex's, wrapped so that `POST /__profile/start` and `/__profile/stop` turn the
profiler on and off (the warm-up runs unprofiled). Prints the functions with the most own time and the
most cumulative time. cProfile slows Python code down unevenly: read it for where the time goes, and take
figures from bench/gateway.py.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
OUT_ENV = "GATEWAY_PROFILE_OUT"


class Profiled:
    """modeldex's app, with two control routes that start and stop a cProfile of this worker."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.profile = cProfile.Profile()
        self.collections: list[tuple[int, float]] = []  # (generation, seconds) while profiling
        self._gc_started = 0.0
        self._profiling = False

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if not self._profiling:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.collections.append((info["generation"], time.perf_counter() - self._gc_started))

    def __rsgi_init__(self, loop: Any) -> None:
        self.app.__rsgi_init__(loop)

    def __rsgi_del__(self, loop: Any) -> None:
        self.app.__rsgi_del__(loop)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.path == "/__profile/start":
            gc.callbacks.append(self._gc)
            self._profiling = True
            self.profile.enable()
            protocol.response_bytes(200, [], b"started")
        elif scope.path == "/__profile/stop":
            self.profile.disable()
            self._profiling = False
            self.profile.dump_stats(os.environ[OUT_ENV])
            with open(os.environ[OUT_ENV] + ".gc", "w") as file:
                json.dump(self.collections, file)
            protocol.response_bytes(200, [], b"stopped")
        else:
            await self.app.__rsgi__(scope, protocol)


def create_app() -> Profiled:
    from modeldex.api.app import create_app as modeldex_app

    return Profiled(modeldex_app())


async def drive(base: str, key: str, body: bytes, warmup: int, count: int) -> None:
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as session:
        for index in range(warmup + count):
            if index == warmup:
                await (await session.post(base + "/__profile/start")).read()
            async with session.post(base + "/v1/chat/completions", data=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                await response.read()
        await (await session.post(base + "/__profile/stop")).read()


def main() -> None:
    from modeldex_server import clean_env, cli
    from procs import free_port

    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modeldex-gateway-profile-"))
    upstream_port, port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, str(Path(__file__).with_name("instant_upstream.py")),
                                 str(upstream_port)])
    url = f"sqlite:///{work / 'catalog.db'}"
    cli("upstreams", "add", "instant", "--base-url", f"http://127.0.0.1:{upstream_port}/v1", "--routing-only",
        "--database-url", url)
    cli("models", "add", "bench-chat", "--database-url", url)
    cli("routes", "add", "bench-chat", "instant", "--upstream-model", "m", "--database-url", url)
    key = cli("keys", "create", "bench", "--database-url", url).split()[0]
    from modeldex.config import ServerSettings

    env = {**clean_env(), **ServerSettings(database_url=url, access_log=True).to_env(),
           OUT_ENV: str(work / "profile.out"), "PYTHONPATH": str(Path(__file__).parent),
           "PROMETHEUS_MULTIPROC_DIR": str(work)}
    launch = f"from ceiling import serve; serve('gateway_profile:create_app', '127.0.0.1', {port}, 1)"
    server = subprocess.Popen([sys.executable, "-c", launch],
                              env=env, cwd=Path(__file__).parent, stdout=open(work / "server.log", "wb"),  # noqa: SIM115
                              stderr=subprocess.STDOUT)
    try:
        time.sleep(3)
        body = json.dumps({"model": "bench-chat", "stream": args.stream,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        uvloop.run(drive(f"http://127.0.0.1:{port}", key, body, 1000, args.requests))
        collections = json.loads((work / "profile.out.gc").read_text())
        for generation in (0, 1, 2):
            times = sorted(t for g, t in collections if g == generation)
            if times:
                print(f"gc generation {generation}: {len(times)} collections in {args.requests} requests, "
                      f"median {times[len(times) // 2] * 1e6:.0f} µs, max {times[-1] * 1e6:.0f} µs")
        stats = pstats.Stats(str(work / "profile.out"))
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
    finally:
        server.terminate()
        upstream.terminate()
        server.wait(timeout=15)
        upstream.wait(timeout=5)


if __name__ == "__main__":
    main()
