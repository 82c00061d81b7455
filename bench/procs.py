"""Server processes for the benchmark: free ports, start and always stop, wait until ready, measure RSS.

Every server runs in its own process group, in the benchmark's session, so that stopping it also stops its
workers, and every one started is stopped at exit (normal, exception, Ctrl-C or SIGTERM): a benchmark must
not leave servers behind on a shared machine.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

HOST = "127.0.0.1"  # every server binds here, and every request goes here: nothing leaves the machine

_running: list[Server] = []


def free_port() -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class ServerFailed(RuntimeError):
    """A server exited or never became ready; the message carries the end of its log."""


class Server:
    """One server process (and its children), logging to a file, stopped by `stop()` or at exit."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.started_at = time.perf_counter()
        with open(log_path, "ab") as log:
            # A process group of its own (stopping it stops its workers), not a session of its own: with
            # scheduler autogroups, a session is a scheduling group with an equal share of the CPUs against
            # wrk's, which flattered modeldex's ratio to the ceiling (bench/README.md has the figures).
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, cwd=cwd, process_group=0)
        _running.append(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise ServerFailed(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 60.0) -> float:
        """Poll `ready()` until true; returns the seconds since the process was spawned."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            self.check_alive()
            try:
                if ready():
                    return time.perf_counter() - self.started_at
            except (OSError, http.client.HTTPException):  # refused or reset while it starts
                pass
            time.sleep(0.01)
        raise ServerFailed(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def truncate_log(self, size: int) -> None:
        """Cut the log back to `size` bytes. The server appends (O_APPEND), so it goes on writing at the new
        end: a run's access lines can be dropped and the disk stays bounded (~130 bytes a request)."""
        with contextlib.suppress(OSError):
            os.truncate(self.log_path, size)

    def rss_mb(self) -> float:
        """RSS of the whole process tree (main process and every worker), in MB."""
        return sum(rss_kb(pid) for pid in process_tree(self.pid)) / 1024

    def cpu_seconds(self) -> float:
        """CPU time (user and system, every thread) used so far by the process tree's live processes."""
        return sum(cpu_seconds(pid) for pid in process_tree(self.pid))

    def largest_rss_mb(self) -> float:
        """RSS of the largest single process of the tree (the per-worker figure), in MB."""
        return max((rss_kb(pid) for pid in process_tree(self.pid)), default=0) / 1024

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the process group, then SIGKILL if it lingers."""
        if self in _running:
            _running.remove(self)
        if self.process.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        _signal_group(self.pid, signal.SIGKILL)  # workers that outlived their parent, if any
        if self.process.poll() is None:
            self.process.wait(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_all() -> None:
    for server in _running:
        try:
            server.stop(grace=5.0)
        except (OSError, subprocess.SubprocessError) as exc:  # stopping the others matters more
            print(f"bench: could not stop {server.name} ({server.pid}): {exc}", file=sys.stderr)


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(143)  # unwinds through every `finally`, then atexit


atexit.register(stop_all)
signal.signal(signal.SIGTERM, _on_sigterm)


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, from the parent ids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime and stime, fields 14 and 15 of stat(5)


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def http_status(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> int:
    """The status of one request on a fresh connection (fresh, so each poll may reach any worker).

    http.client rather than httpx here: polls must cost well under a millisecond of the time they measure.
    """
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or HOST, parts.port, timeout=5.0)
    try:
        connection.request(method, parts.path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    return http_status(url, headers) == 200
