"""Processes forked from tests/forkserver.py instead of started as new interpreters, and waited for here.

The test process becomes a subreaper (prctl PR_SET_CHILD_SUBREAPER): a server the fork server forks twice
is orphaned at once and comes to the test process, which waits for it as for any child (ForkedProcess).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ForkServer:
    """tests/forkserver.py for this test process: runs `python -m MODULE ARGS` as a process forked from one
    that has imported PRELOAD already, instead of a new interpreter each time (see that file)."""

    def __init__(self, python: str | Path, module: str, *preload: str, env: dict[str, str] | None = None) -> None:
        self.python = str(python)
        self.module = module
        self.tmp = Path(tempfile.mkdtemp(prefix=f"forkserver-{module}-"))
        self.lock = threading.Lock()
        self.runs = 0
        self.pending = b""
        self.ready = False
        with open(self.tmp / "forkserver.log", "wb") as log:
            self.process = subprocess.Popen([self.python, str(Path(__file__).with_name("forkserver.py")), module, *preload],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, bufsize=0,
                                            env=env)

    def _reply(self, timeout: float) -> dict:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.process.stdout], [], [], remaining)[0]:
                raise TimeoutError
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"the fork server for {self.module} died:\n{(self.tmp / 'forkserver.log').read_text()}")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def _fork(self, request: dict[str, Any]) -> int:
        """Send one request (the lock held); the pid of the process it forked."""
        assert self.process.stdin is not None
        if not self.ready:  # its imports: seconds (LiteLLM's ~7 s of CPU), longer on a loaded machine
            assert self._reply(600) == {"ready": True}
            self.ready = True
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        try:
            return int(self._reply(10)["pid"])
        except TimeoutError:
            self.process.kill()  # a late reply would be taken for the next request's: no next request
            raise

    def run(self, args: tuple[str, ...], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        command = [self.python, "-m", self.module, *args]
        with self.lock:
            self.runs += 1
            stdout, stderr = self.tmp / f"{self.runs}.out", self.tmp / f"{self.runs}.err"
            pid = self._fork({"args": list(args), "env": env, "stdout": str(stdout), "stderr": str(stderr)})
            try:
                returncode = self._reply(timeout)["returncode"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._reply(10)
                raise subprocess.TimeoutExpired(command, timeout) from None
            result = subprocess.CompletedProcess(command, returncode, stdout.read_text(), stderr.read_text())
            stdout.unlink()
            stderr.unlink()
        return result

    def start(self, args: tuple[str, ...], env: dict[str, str], log_path: Path, append: bool = False
              ) -> ForkedProcess:
        """`MODULE ARGS` (a server) forked and left running, both streams to `log_path`, in a session of
        its own; this test process is its parent once the fork server's middle process exits."""
        _become_subreaper()
        with self.lock:
            pid = self._fork({"args": list(args), "env": env, "stdout": str(log_path), "stderr": str(log_path),
                              "detach": True, "append": append})
        return ForkedProcess(pid, [self.python, "-m", self.module, *args])

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


_FORK_SERVERS: dict[str, ForkServer] = {}


def fork_server(name: str, make: Callable[[], ForkServer]) -> ForkServer:
    """This test process's fork server called `name`, made on first use; close_all() stops every one."""
    if name not in _FORK_SERVERS:
        _FORK_SERVERS[name] = make()
    return _FORK_SERVERS[name]


def close_all() -> None:
    while _FORK_SERVERS:
        _FORK_SERVERS.popitem()[1].close()


_SUBREAPER: list[bool] = []


def _become_subreaper() -> None:
    """Make this process the parent of orphaned descendants (prctl PR_SET_CHILD_SUBREAPER), so that it can
    wait for a server the fork server forked twice."""
    if not _SUBREAPER:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        _SUBREAPER.append(True)


class ForkedProcess:
    """What Server needs of a Popen, for a server forked by the fork server: this process waits for it."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
