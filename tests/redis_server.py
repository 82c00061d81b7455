"""Redis for the tests, found or started the way tests/postgres.py does it for PostgreSQL: the server that
MODELDEX_TEST_REDIS_URL names, else one answering PING on 127.0.0.1:6379, else a throwaway `redis-server` of
our own on a free port (no persistence, in a temporary directory), stopped after the session."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from .postgres import free_port

TEST_URL_ENV = "MODELDEX_TEST_REDIS_URL"
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def answers_ping(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class PrivateRedis:
    """`redis-server` on a free loopback port, without persistence, in a temporary directory."""

    def __init__(self, timeout: float = 15) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(f"no Redis at {DEFAULT_URL} and no redis-server binary to start one; "
                               f"install Redis or set {TEST_URL_ENV}")
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="modeldex-redis-"))
        self.logfile = self.root / "redis.log"
        self.start(timeout)

    def start(self, timeout: float = 15) -> None:
        """Start it (again, after `kill`) on its port."""
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--logfile", str(self.logfile)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not answers_ping(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
                self.destroy()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: gone at once, its port refusing connections."""
        self.process.kill()
        self.process.wait()

    def freeze(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, but nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def destroy(self) -> None:
        if self.process.poll() is None:
            self.thaw()  # a stopped process would not act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
