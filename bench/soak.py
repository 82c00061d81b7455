"""Soak test: mixed traffic against a real modeldex for a bounded time, then a verdict.

    .venv/bin/python bench/soak.py --duration 180

Starts `modeldex serve` (2 workers, a temporary SQLite catalog unless --database-url is given) on a free
loopback port and drives it from several threads with reads, bad keys, unknown models and admin writes.
Every few seconds it samples the server's memory (RSS of the process tree) and open file descriptors.
It prints a report and exits non-zero if any request got a 5xx, memory grew more than --max-rss-growth-mb
after warm-up, or file descriptors grew more than --max-fd-growth.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import free_port, process_tree, rss_kb

ROOT = Path(__file__).resolve().parent.parent


def modeldex(*args: str, env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "modeldex", *args]
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout.strip()


def sample(root: int) -> tuple[float, int]:
    """(RSS in MB, open file descriptors) summed over the server's processes."""
    total_kb, fds = 0, 0
    for pid in process_tree(root):
        total_kb += rss_kb(pid)
        try:
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total_kb / 1024, fds


class Traffic:
    """Mixed requests from one thread; counts answers by status."""

    def __init__(self, base: str, read_key: str, admin_key: str, seed: int) -> None:
        self.base = base
        # Each thread is its own client address (the server trusts X-Forwarded-For from loopback), so one
        # thread's bad keys do not get the others refused by the failed-authentication limit.
        address = f"203.0.113.{seed + 1}"
        self.read = {"Authorization": f"Bearer {read_key}", "X-Forwarded-For": address}
        self.admin = {"Authorization": f"Bearer {admin_key}", "X-Forwarded-For": address}
        self.random = random.Random(seed)
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors = 0
        self.client = httpx.Client(timeout=10)
        self.seed = seed
        self.created: collections.deque[str] = collections.deque()

    def one(self, n: int) -> None:
        roll = self.random.random()
        if roll < 0.45:
            response = self.client.get(f"{self.base}/v1/models", headers=self.read)
        elif roll < 0.75:
            response = self.client.get(f"{self.base}/v1/models/MiniMax-M3", headers=self.read)
        elif roll < 0.83:
            response = self.client.get(f"{self.base}/v1/models/no-such-{n}", headers=self.read)
        elif roll < 0.88:
            response = self.client.get(f"{self.base}/v1/models", headers={
                "Authorization": f"Bearer sk-mdx-bad{n:049d}", "X-Forwarded-For": f"198.51.100.{n % 250}"})
        elif roll < 0.94 and len(self.created) < 20:
            response = self.client.post(f"{self.base}/v1/admin/models", headers=self.admin,
                                        json={"id": f"soak/{self.seed}-{n}", "context_length": 1 + n})
            if response.status_code == 201:
                self.created.append(f"soak/{self.seed}-{n}")
        elif roll < 0.97 or not self.created:
            response = self.client.patch(f"{self.base}/v1/admin/models/MiniMax-M2", headers=self.admin,
                                         json={"context_length": 1000 + n})
        else:  # the oldest model this thread made: the catalog stays the same size, writes go on
            response = self.client.delete(f"{self.base}/v1/admin/models/{self.created.popleft()}",
                                          headers=self.admin)
        self.statuses[response.status_code] += 1

    def run(self, until: float) -> None:
        n = 0
        while time.monotonic() < until:
            n += 1
            try:
                self.one(n)
            except httpx.HTTPError:
                self.errors += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=180, help="seconds of traffic (default 180)")
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--max-rss-growth-mb", type=float, default=40)
    parser.add_argument("--max-fd-growth", type=int, default=10)
    parser.add_argument("--change-retention", default=None,
                        help="the server's --change-retention (default: the server's own default)")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="modeldex-soak-")
    url = args.database_url or f"sqlite:///{tmp}/catalog.db"
    env = {**os.environ, "MODELDEX_DATABASE_URL": url}
    admin_key = modeldex("keys", "create", f"soak-admin-{os.getpid()}", "--scope", "admin", env=env)
    read_key = modeldex("keys", "create", f"soak-reader-{os.getpid()}", env=env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(Path(tmp) / "server.log", "wb") as server_log:  # the child keeps its own descriptor
        server = subprocess.Popen(
            [sys.executable, "-m", "modeldex", "serve", "--port", str(port), "--workers", str(args.workers),
             "--no-access-log", "--forwarded-allow-ips", "127.0.0.1",
             *(["--change-retention", args.change_retention] if args.change_retention else [])],
            env=env, stdout=subprocess.DEVNULL, stderr=server_log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            print("server did not become ready", file=sys.stderr)
            return 2

        workers = [Traffic(base, read_key, admin_key, seed) for seed in range(args.threads)]
        warmup = min(10.0, args.duration / 4)
        until = time.monotonic() + args.duration
        threads = [threading.Thread(target=w.run, args=(until,)) for w in workers]
        for thread in threads:
            thread.start()
        time.sleep(warmup)
        samples = [sample(server.pid)]
        while any(thread.is_alive() for thread in threads):
            time.sleep(min(5.0, max(0.5, until - time.monotonic())))
            samples.append(sample(server.pid))
        for thread in threads:
            thread.join()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    statuses = sum((w.statuses for w in workers), collections.Counter())
    total = sum(statuses.values())
    server_errors = sum(count for status, count in statuses.items() if status >= 500)
    transport_errors = sum(w.errors for w in workers)
    rss_growth = samples[-1][0] - samples[0][0]
    fd_growth = samples[-1][1] - samples[0][1]
    print(f"soak: {args.duration:.0f} s, {args.threads} threads, {args.workers} workers, {total} requests "
          f"({total / args.duration:.0f}/s)")
    print("status counts: " + ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items())))
    print(f"5xx: {server_errors}; transport errors: {transport_errors}")
    print(f"RSS after warm-up {samples[0][0]:.1f} MB, at end {samples[-1][0]:.1f} MB, growth {rss_growth:+.1f} MB "
          f"(max seen {max(s[0] for s in samples):.1f} MB)")
    print(f"open file descriptors after warm-up {samples[0][1]}, at end {samples[-1][1]} ({fd_growth:+d})")
    if args.database_url is None:  # the SQLite file and its write-ahead log
        size = sum(path.stat().st_size for path in Path(tmp).glob("catalog.db*"))
        print(f"database on disk at end: {size / 1e6:.1f} MB")
    failed = (server_errors > 0 or transport_errors > 0 or rss_growth > args.max_rss_growth_mb
              or fd_growth > args.max_fd_growth)
    print("verdict: " + ("FAIL" if failed else "PASS"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
