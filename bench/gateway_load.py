"""The inference gateway's scenarios for run.py: a chat completion, not streamed and streamed (50 events),
sent straight to an upstream, through modeldex, and (with --peers) through LiteLLM's proxy in front of the
same upstream; with wrk (a Lua script for the POST body), one connection for latency, 64 for throughput.

The upstreams are as fast as this machine allows: nginx answering the canned completion (`return 200`
from memory) for the one not streamed, bench/instant_upstream.py (a raw uvloop protocol) for the stream.
Every server has one worker. Added latency is a gateway's p50 (p99) minus the direct p50 (p99) of the
same repeat; servers run in turns, rotating which goes first, and the table shows medians.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from baseline import nginx_temp_paths
from instant_upstream import BODY as COMPLETION
from load import Request, RunResult, run_wrk
from modeldex_server import cli, start_modeldex
from peers import MASTER_KEY, start_litellm
from procs import HOST, Server, free_port, http_status

EVENTS = 50
LATENCY_CONNECTIONS = 1
THROUGHPUT_CONNECTIONS = 64
DIRECT, MODELDEX, LITELLM = "straight to the upstream", "modeldex", "LiteLLM proxy"
# The bars (issue 13), reported as met or missed; the harness asserts nothing.
ADDED_P99_BAR_MS = 0.5
VS_LITELLM_BAR = 20.0


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    model: str  # the model id modeldex and LiteLLM route; the upstream is asked for `m`
    stream: bool

    def body(self, model: str) -> str:
        return json.dumps({"model": model, "stream": self.stream, "messages": [{"role": "user", "content": "hi"}]})


SCENARIOS = (Scenario("chat", "chat completion, not streamed", "bench-chat", False),
             Scenario("stream", f"chat completion, streamed ({EVENTS} events)", "bench-stream", True))


@dataclass
class Measured:
    """One (scenario, server): its latency runs (1 connection) and throughput runs (64)."""

    latency: list[RunResult] = field(default_factory=list)
    throughput: list[RunResult] = field(default_factory=list)

    def p(self, attribute: str) -> float:
        return statistics.median(getattr(run, attribute) for run in self.latency)

    @property
    def rps(self) -> float:
        return statistics.median(run.rps for run in self.throughput)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.latency + self.throughput)


@dataclass
class GatewayResult:
    measured: dict[str, dict[str, Measured]]  # scenario name -> server -> figures
    litellm_note: str | None = None  # why LiteLLM is missing, when it is
    duration: float = 0.0
    repeat: int = 0


def nginx_config(directory: Path, port: int) -> Path:
    """nginx answering every request to /v1/chat/completions with the canned completion, from memory."""
    body = COMPLETION.decode()
    assert "'" not in body and "\\" not in body  # it goes between single quotes
    config = f"""daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    default_type application/json;
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{nginx_temp_paths(directory)}    server {{
        listen {HOST}:{port};
        location = /v1/chat/completions {{ return 200 '{body}'; }}
    }}
}}
"""
    path = directory / "nginx.conf"
    path.write_text(config)
    return path


def start_upstreams(directory: Path) -> tuple[list[Server], dict[str, str]]:
    """nginx (not streamed) and the instant upstream (streamed); returns them and each scenario's base URL."""
    from baseline import nginx_binary

    directory.mkdir(parents=True, exist_ok=True)
    nginx_port, instant_port = free_port(), free_port()
    nginx = Server("nginx upstream", [nginx_binary(), "-c", str(nginx_config(directory, nginx_port)), "-p",
                                      str(directory), "-e", "stderr"], directory / "nginx.log")
    here = Path(__file__).resolve().parent
    instant = Server("instant upstream", [sys.executable, str(here / "instant_upstream.py"), str(instant_port)],
                     directory / "instant.log")
    bases = {"chat": f"http://{HOST}:{nginx_port}/v1", "stream": f"http://{HOST}:{instant_port}/v1"}
    for server, base in zip((nginx, instant), bases.values(), strict=True):
        server.wait_ready(lambda base=base: http_status(base + "/chat/completions", method="POST") == 200,
                          timeout=15)
    return [nginx, instant], bases


def start_modeldex_gateway(directory: Path, bases: dict[str, str]) -> tuple[Server, str, str]:
    """`modeldex serve` (its defaults: access log on; one worker) routing each scenario's model to its upstream."""
    directory.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{directory / 'catalog.db'}"
    for scenario in SCENARIOS:
        cli("upstreams", "add", scenario.name, "--base-url", bases[scenario.name], "--routing-only",
            "--database-url", url)
        cli("models", "add", scenario.model, "--database-url", url)
        cli("routes", "add", scenario.model, scenario.name, "--upstream-model", "m", "--database-url", url)
    key = cli("keys", "create", "bench-gateway", "--database-url", url).split()[0]
    server, base, _ = start_modeldex(url, 1, directory, access_log=True)
    return server, base, key


def litellm_routes(bases: dict[str, str]) -> dict[str, str]:
    return {scenario.model: bases[scenario.name] for scenario in SCENARIOS}


def check(request: Request) -> None:
    """One request by hand before wrk: the answer must be a 200 (a stream's, with its events)."""
    import httpx

    response = httpx.post(request.url, content=request.body, headers={**request.headers,
                                                                      "content-type": "application/json"})
    if response.status_code != 200:
        raise RuntimeError(f"{request.url} answers {response.status_code}: {response.text[:200]}")
    if b'"stream": true' in (request.body or "").encode() and response.text.count("data: ") < EVENTS:
        raise RuntimeError(f"{request.url} streamed {response.text.count('data: ')} events, not {EVENTS}+")


def measure(targets: dict[str, dict[str, Request]], duration: float, repeat: int) -> dict[str, dict[str, Measured]]:
    measured = {name: {server: Measured() for server in by_server} for name, by_server in targets.items()}
    for by_server in targets.values():
        for request in by_server.values():
            check(request)
            run_wrk(request, 1, LATENCY_CONNECTIONS)  # warm-up: connections, caches
    for attempt in range(repeat):
        for name, by_server in targets.items():
            order = list(by_server.items())
            turn = attempt % len(order)
            for server, request in order[turn:] + order[:turn]:
                latency = RunResult(*run_wrk(request, duration, LATENCY_CONNECTIONS), rss_mb=0.0)
                throughput = RunResult(*run_wrk(request, duration, THROUGHPUT_CONNECTIONS), rss_mb=0.0)
                measured[name][server].latency.append(latency)
                measured[name][server].throughput.append(throughput)
                print(f"  gateway {name} via {server}, run {attempt + 1}: p50 {latency.p50_ms:.3f} ms, "
                      f"p99 {latency.p99_ms:.3f} ms at 1 connection; {throughput.rps:,.0f} req/s at "
                      f"{THROUGHPUT_CONNECTIONS}", file=sys.stderr, flush=True)
    return measured


def run_gateway(workdir: Path, duration: float, repeat: int, peers: bool) -> GatewayResult:
    upstreams, bases = start_upstreams(workdir / "gateway-upstreams")
    servers = list(upstreams)
    note = None
    try:
        modeldex, base, key = start_modeldex_gateway(workdir / "gateway-modeldex", bases)
        servers.append(modeldex)
        gateways = {MODELDEX: (base, {"Authorization": f"Bearer {key}"})}
        if peers:
            try:
                litellm, litellm_base, _ = start_litellm(workdir / "gateway-litellm", [], litellm_routes(bases))
                servers.append(litellm)
                gateways[LITELLM] = (litellm_base, {"Authorization": f"Bearer {MASTER_KEY}"})
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                note = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        targets: dict[str, dict[str, Request]] = {}
        for scenario in SCENARIOS:
            targets[scenario.name] = {DIRECT: Request(bases[scenario.name] + "/chat/completions",
                                                      {"Content-Type": "application/json"}, 200, scenario.body("m"))}
            for server, (server_base, auth) in gateways.items():
                targets[scenario.name][server] = Request(server_base + "/v1/chat/completions",
                                                         {"Content-Type": "application/json", **auth}, 200,
                                                         scenario.body(scenario.model))
        measured = measure(targets, duration, repeat)
    finally:
        for server in servers:
            server.stop()
    return GatewayResult(measured, note, duration, repeat)


def render(result: GatewayResult) -> str:
    lines = ["## Inference gateway", "",
             (f"A chat completion through each gateway and straight to the same upstream (nginx answering the "
             f"canned completion; for the stream, bench/instant_upstream.py writing {EVENTS} events at once), "
             f"one worker each, wrk with a Lua script: 1 connection for latency, {THROUGHPUT_CONNECTIONS} for "
             f"throughput, {result.duration:.0f} s per run, medians of {result.repeat}. Added = the gateway's "
             "percentile minus the direct one."), "",
             ("| scenario | server | p50 (1 conn.) | p99 (1 conn.) | added p50 | added p99 | req/s at 64 | "
             "× LiteLLM | errors |"),
             "|---|---|---|---|---|---|---|---|---|"]
    bars = []
    for scenario in SCENARIOS:
        by_server = result.measured[scenario.name]
        direct = by_server[DIRECT]
        litellm = by_server.get(LITELLM)
        for server, m in by_server.items():
            added = server != DIRECT
            ratio = f"{m.rps / litellm.rps:.1f}×" if litellm is not None and server == MODELDEX else ""
            lines.append(
                f"| {scenario.label} | {server} | {m.p('p50_ms'):.3f} ms | {m.p('p99_ms'):.3f} ms | "
                + (f"{m.p('p50_ms') - direct.p('p50_ms'):.3f} ms | {m.p('p99_ms') - direct.p('p99_ms'):.3f} ms | "
                   if added else " | | ")
                + f"{m.rps:,.0f} | {ratio} | {m.errors} |")
        ours = by_server[MODELDEX]
        added_p99 = ours.p("p99_ms") - direct.p("p99_ms")
        bars.append(f"- {scenario.label}: added p99 at 1 connection {added_p99:.3f} ms (bar ≤ {ADDED_P99_BAR_MS} ms: "
                    f"{'met' if added_p99 <= ADDED_P99_BAR_MS else 'missed'})")
        if litellm is not None:
            ratio_value = ours.rps / litellm.rps
            bars.append(f"- {scenario.label}: throughput {ratio_value:.1f}× LiteLLM's proxy (bar ≥ "
                        f"{VS_LITELLM_BAR:.0f}×: {'met' if ratio_value >= VS_LITELLM_BAR else 'missed'})")
    if result.litellm_note:
        lines += ["", f"LiteLLM's proxy could not be measured: {result.litellm_note}"]
    return "\n".join([*lines, "", "Bars (issue 13):", *bars, ""])
