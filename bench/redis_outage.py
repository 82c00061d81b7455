"""Redis outage under load: rate-limited traffic while Redis is up, frozen (SIGSTOP), thawed, killed and
started again, with every request's status and time counted per phase.

    .venv/bin/python bench/redis_outage.py --phase-seconds 10

Starts a private `redis-server` and `modeldex serve --redis-url` (2 workers, a temporary SQLite catalog) on
free loopback ports, and drives it from several threads with rate-limited reads, unlimited reads, admin
writes and bad keys (each thread its own client address through X-Forwarded-For). Exits non-zero if any
request got a 5xx or took longer than --bound seconds: with Redis away, limits must be counted in each
worker's memory within milliseconds, never fail or wait.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import HOST, Server, free_port

PHASES = ("up", "frozen", "thawed", "killed", "restarted")


class Redis:
    """A throwaway redis-server on a fixed port, which can be frozen, thawed, killed and started again."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis_outage: needs redis-server on PATH")
        self.binary, self.root, self.port = binary, root, free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", str(self.root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("redis_outage: redis-server did not start")

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGCONT)
            self.kill()


class Traffic(threading.Thread):
    """One client address sending a mix of requests until told to stop; results go to the current phase."""

    def __init__(self, base: str, keys: dict[str, str], index: int, phase: list[str],
                 results: dict[str, collections.Counter[str]], slowest: dict[str, float], lock: threading.Lock,
                 stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.base, self.keys, self.index = base, keys, index
        self.phase, self.results, self.slowest, self.lock, self.stop = phase, results, slowest, lock, stop

    def run(self) -> None:
        address = f"198.51.100.{self.index + 1}"
        requests = [
            ("limited", "GET", "/v1/models", self.keys["reader"], None),
            ("unlimited", "GET", "/v1/models/MiniMax-M3", self.keys["free"], None),
            ("bad key", "GET", "/v1/models", "sk-mdx-" + "B" * 52, None),
            ("admin write", "PATCH", "/v1/admin/models/MiniMax-M3", self.keys["ops"], {"description": "x"}),
        ]
        with httpx.Client(base_url=self.base, timeout=30) as client:
            turn = 0
            while not self.stop.is_set():
                what, method, path, key, body = requests[turn % len(requests)]
                turn += 1
                phase = self.phase[0]
                started = time.perf_counter()
                try:
                    status = str(client.request(method, path, json=body, headers={
                        "Authorization": f"Bearer {key}", "X-Forwarded-For": address}).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                elapsed = time.perf_counter() - started
                with self.lock:
                    self.results[phase][f"{what} {status}"] += 1
                    self.slowest[phase] = max(self.slowest[phase], elapsed)


def healthy(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase-seconds", type=float, default=10)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bound", type=float, default=1.0, help="no request may take longer (seconds)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="modeldex-redis-outage-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDEX_")}
    env["MODELDEX_DATABASE_URL"] = f"sqlite:///{root}/catalog.db"
    modeldex = [sys.executable, "-m", "modeldex"]

    def cli(*argv: str) -> str:
        return subprocess.run([*modeldex, *argv], env=env, check=True, capture_output=True, text=True).stdout.strip()

    keys = {"reader": cli("keys", "create", "reader", "--rate-limit", "100000/m"),
            "free": cli("keys", "create", "free", "--rate-limit", "unlimited"),
            "ops": cli("keys", "create", "ops", "--scope", "admin")}
    redis = Redis(root)
    port = free_port()
    server = Server("modeldex", [*modeldex, "serve", "--port", str(port), "--workers", str(args.workers),
                                 "--redis-url", f"redis://{HOST}:{redis.port}/0", "--rate-limit", "100000/m",
                                 "--auth-failure-limit", "100000/m", "--forwarded-allow-ips", HOST,
                                 "--no-access-log"], root / "server.log", env=env)
    base = f"http://{HOST}:{port}"
    phase = [PHASES[0]]
    results: dict[str, collections.Counter[str]] = {name: collections.Counter() for name in PHASES}
    slowest = dict.fromkeys(PHASES, 0.0)
    lock, stop = threading.Lock(), threading.Event()
    try:
        server.wait_ready(lambda: healthy(base))
        threads = [Traffic(base, keys, n, phase, results, slowest, lock, stop) for n in range(args.threads)]
        for thread in threads:
            thread.start()
        actions = {"frozen": lambda: redis.signal(signal.SIGSTOP), "thawed": lambda: redis.signal(signal.SIGCONT),
                   "killed": redis.kill, "restarted": redis.start}
        for name in PHASES:
            if name in actions:
                actions[name]()
            phase[0] = name
            ready = httpx.get(base + "/readyz", timeout=5).json().get("rate_limits")
            time.sleep(args.phase_seconds)
            print(f"{name}: readyz at start {ready}", flush=True)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        degraded_lines = server.log_path.read_text(errors="replace").count("rate limits degraded")
    finally:
        server.stop()
        redis.stop()
        shutil.rmtree(root, ignore_errors=True)

    failed = False
    for name in PHASES:
        total = sum(results[name].values())
        errors = sum(count for outcome, count in results[name].items()
                     if outcome.rsplit(" ", 1)[1] not in ("200", "401", "429"))
        failed |= errors > 0 or slowest[name] > args.bound
        print(f"{name:9} {total:6} requests, {errors} not 200/401/429, slowest {slowest[name] * 1000:.0f} ms: "
              f"{dict(sorted(results[name].items()))}")
    print(f"'rate limits degraded' log lines: {degraded_lines} (one per worker per outage expected)")
    print("FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
