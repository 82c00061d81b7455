"""Load generation with wrk, and what one run and several repeats of it measured."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field

WRK_THREADS = 2
WRK_CONNECTIONS = 64

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class Request:
    """What wrk sends: the URL and extra headers; `expect` is the status every answer must have."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    expect: int = 200
    body: str | None = None  # sent as a POST (through a Lua script: wrk's command line has no body)

    def at(self, base: str) -> Request:
        """The same request to the server at `base` (when `url` is a path)."""
        return Request(base + self.url, self.headers, self.expect, self.body)


@dataclass(frozen=True)
class RunResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors, plus answers whose status class was not the expected one
    rss_mb: float
    cpu_us: float = 0.0  # the server's CPU time (all its processes and threads) per answered request


def run_wrk(request: Request, duration: float, connections: int = WRK_CONNECTIONS,
            threads: int = WRK_THREADS) -> tuple[float, float, float, int, int]:
    """One wrk run; returns (req/s, p50 ms, p99 ms, requests, errors)."""
    argv = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{max(duration, 1):.0f}s", "--latency",
            "--timeout", "10s"]
    for name, value in request.headers.items():
        argv += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if request.body is not None:
            # JSON string literals are Lua string literals too (for the ASCII bodies sent here).
            script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(request.body)}\n')
            script.flush()
            argv += ["-s", script.name]
        argv.append(request.url)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    return parse_wrk(out, request.expect)


def parse_wrk(out: str, expect: int) -> tuple[float, float, float, int, int]:
    """Requests/sec, the 50% and 99% latency lines, the request count, and the errors wrk reported."""
    rps = float(_search(r"Requests/sec:\s+([\d.]+)", out))
    p50 = _latency(_search(r"^\s+50%\s+(\S+)", out))
    p99 = _latency(_search(r"^\s+99%\s+(\S+)", out))
    requests = int(_search(r"(\d+) requests in", out))
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx_3xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    # wrk only counts statuses >= 400; an error scenario must have every answer counted there.
    wrong_status = requests - non_2xx_3xx if expect >= 400 else non_2xx_3xx
    return rps, p50, p99, requests, socket_errors + wrong_status


def _search(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise ValueError(f"wrk output has no match for {pattern!r}:\n{text}")
    return match.group(1)


def _latency(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        raise ValueError(f"unreadable wrk latency {value!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


@dataclass
class Series:
    """The repeats of one (scenario, server) pair: the table shows medians and how far apart runs were."""

    runs: list[RunResult] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(run, attribute) for run in self.runs)

    @property
    def rps(self) -> float:
        return self.median("rps")

    @property
    def noise(self) -> float:
        """(max - min) / median of req/s: 0.05 means the repeats were within 5% of each other."""
        values = [run.rps for run in self.runs]
        return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    @property
    def rss_mb(self) -> float:
        return max(run.rss_mb for run in self.runs)

    @property
    def cpu_us(self) -> float:
        return self.median("cpu_us")
