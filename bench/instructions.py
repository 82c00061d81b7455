"""modeldex's own work per request in instructions, which a busy or shared machine does not disturb: the
Models hot path's `app.__rsgi__()` on granian's real scope, headers and protocol, counted by valgrind's
callgrind, against the Python ceiling's handler (bench/ceiling.py) with the same answer, on the same
objects.

    bench/instructions.py [--requests 5000]

On the machine of 2026-12-01, where wrk's req/s varied by 20–50 % from run to run, counts of the same code
differed by up to 6 % for the ceiling's handler and 1 % for modeldex (four runs). It starts one granian
worker under callgrind, instrumentation off, and asks it each scenario once with `x-instructions: <target>`;
on that request the worker runs the target --requests times on the request's own objects (granian ignores
every answer after the first), between a file it writes and one it waits for, while this script switches the
counting on and off around them (`callgrind_control`). Only the worker's event-loop thread is counted. The
request clock advances by 7.5 µs a read during the loop, as at ~65,000 requests a second, so that the access
log makes a time stamp per millisecond as it does under load, not one per request as it would at valgrind's
pace.

It counts instructions, not cycles: cache misses, the other threads (granian's I/O thread, the log's
writer) and the access log's batches (joined every 20 ms on the loop) are not in it. bench/run.sh
measures the whole.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ceiling import constant_app, load_answer, serve
from in_worker import SCENARIOS, WARMUP_REQUESTS, Measuring, drive, prepare

HOST = "127.0.0.1"
HEADER = "x-instructions"
DIR_ENV = "INSTRUCTIONS_DIR"  # where the worker and this script leave each other files
REQUESTS_ENV = "INSTRUCTIONS_REQUESTS"
CLOCK_STEP = 7.5e-6  # seconds per reading of the request clock during the counted loop
TARGETS = ("modeldex", "modeldex --no-access-log", "ceiling")


class Counted(Measuring):
    """modeldex's app; a request carrying HEADER runs a target in a loop, between two files."""

    header = HEADER

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(os.environ[DIR_ENV])
        self.requests = int(os.environ[REQUESTS_ENV])

    def measure(self, scope: Any, protocol: Any, target: str) -> None:
        app: Any = self.app
        access_log = self.app.access_log
        if target == "ceiling":
            app = constant_app(*load_answer(str(self.directory / "answer.json")))
        elif target == "modeldex --no-access-log":
            self.app.access_log = None  # what --no-access-log makes: no AccessLog object
        clock = time.perf_counter
        try:
            for _ in range(WARMUP_REQUESTS):
                drive(app.__rsgi__(scope, protocol))
            start, readings = clock(), itertools.count()
            time.perf_counter = lambda: start + next(readings) * CLOCK_STEP
            (self.directory / "ready.tmp").write_text(str(os.getpid()))
            (self.directory / "ready.tmp").rename(self.directory / "ready")  # seen whole, or not at all
            while not (self.directory / "go").exists():  # a few polls are counted: < 1 instruction a request
                time.sleep(0.02)
            for _ in range(self.requests):
                drive(app.__rsgi__(scope, protocol))
        finally:
            time.perf_counter = clock
            self.app.access_log = access_log
            (self.directory / "done").touch()


def create_app() -> Counted:
    return Counted()


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


def main_thread_total(dump_dir: Path, pid: int, part: int) -> int:
    """The instructions of the worker's first thread (the event loop) in its `part`-th dump."""
    text = (dump_dir / f"callgrind.{pid}.{part}-01").read_text()
    match = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no total in callgrind's dump {part} of {pid}")
    return int(match.group(1))


def measure(base: str, path: str, headers: dict[str, str], target: str, workdir: Path, dump_dir: Path,
            part: int) -> tuple[int, int]:
    """Count one target on one request; returns (the worker's pid, instructions in the loop)."""
    import http.client

    for name in ("ready", "go", "done"):
        (workdir / name).unlink(missing_ok=True)
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=1800)
    sender = threading.Thread(target=lambda: _send(connection, path, {**headers, HEADER: target}), daemon=True)
    sender.start()
    deadline = time.monotonic() + 1800
    while not (workdir / "ready").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker never started counting {target} on {path}")
        time.sleep(0.1)
    pid = int((workdir / "ready").read_text())
    callgrind_control("-i", "on", str(pid))
    callgrind_control("-z", str(pid))  # whatever ran since the last dump
    (workdir / "go").touch()
    while not (workdir / "done").exists():
        time.sleep(0.1)
    callgrind_control("-d", str(pid))  # before switching off: a dump while off counts nothing
    callgrind_control("-i", "off", str(pid))
    sender.join(timeout=600)
    return pid, main_thread_total(dump_dir, pid, part)


def _send(connection: Any, path: str, headers: dict[str, str]) -> None:
    connection.request("GET", path, headers=headers)
    connection.getresponse().read()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000, help="requests counted per cell (default 5000)")
    parser.add_argument("--keep-dumps", type=Path, metavar="DIR",
                        help="copy callgrind's dumps here, to read with callgrind_annotate (one per cell, in order)")
    parser.add_argument("--only", choices=list(SCENARIOS), action="append", help="count these scenarios only")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server process itself
    args = parser.parse_args(argv)
    if args.serve:
        serve("instructions:create_app", HOST, args.serve, 1)
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("instructions.py needs valgrind (Debian's package valgrind)", file=sys.stderr)
        return 2

    # Here, not at the top: granian's workers import this module, and procs sets signal handlers.
    from procs import Server, free_port, http_ok, stop_all

    workdir = Path(tempfile.mkdtemp(prefix="modeldex-instructions-"))
    try:
        keys, env = prepare(workdir, "instructions-read")
        dump_dir = workdir / "dumps"
        dump_dir.mkdir()
        env.update({DIR_ENV: str(workdir), REQUESTS_ENV: str(args.requests)})
        port = free_port()
        argv_server = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--instr-atstart=no",
                       "--separate-threads=yes", f"--callgrind-out-file={dump_dir}/callgrind.%p",
                       sys.executable, __file__, "--serve", str(port)]
        server = Server("modeldex under callgrind", argv_server, workdir / "server.log", env=env,
                        cwd=Path(__file__).resolve().parent)
        base = f"http://{HOST}:{port}"
        server.wait_ready(lambda: http_ok(f"{base}/healthz"), timeout=900)
        table: dict[str, dict[str, float]] = {}
        part = 0
        for scenario, (path, key) in SCENARIOS.items():
            if args.only and scenario not in args.only:
                continue
            headers = {"Authorization": f"Bearer {keys[key]}"}
            capture_answer(base, path, headers, workdir / "answer.json")
            table[scenario] = {}
            for target in TARGETS:
                part += 1
                _, total = measure(base, path, headers, target, workdir, dump_dir, part)
                table[scenario][target] = total / args.requests
                print(f"{scenario}, {target}: {total / args.requests:,.0f} instructions a request", file=sys.stderr,
                      flush=True)
        server.stop()
        if args.keep_dumps is not None:
            shutil.copytree(dump_dir, args.keep_dumps, dirs_exist_ok=True)
    finally:
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print(render(table))
    return 0


def capture_answer(base: str, path: str, headers: dict[str, str], out: Path) -> None:
    """modeldex's answer to the request, as bench/ceiling.py's load_answer reads it (granian's own server,
    content-length and date aside)."""
    import http.client

    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=600)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    kept = [(name.lower(), value) for name, value in response.getheaders()
            if name.lower() not in ("server", "content-length", "date")]
    out.write_text(json.dumps([response.status, kept, body.decode("latin-1")]))


def render(table: dict[str, dict[str, float]]) -> str:
    lines = ["| instructions a request | " + " | ".join(table) + " |", "|---|" + "---:|" * len(table)]
    for target in TARGETS:
        lines.append(f"| {target} | " + " | ".join(f"{table[s][target]:,.0f}" for s in table) + " |")
    for target in TARGETS[:2]:
        own = [table[s][target] - table[s]["ceiling"] for s in table]
        lines.append(f"| {target}: own (minus the ceiling) | " + " | ".join(f"{n:,.0f}" for n in own) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
