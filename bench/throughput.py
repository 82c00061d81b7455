"""Request scenarios under load: modeldex with its defaults (access log on) and with --no-access-log,
against granian with an app that only answers the same bytes (the Python ceiling) and, unless asked not
to, nginx serving them as static files; all run in turns.

Each group of scenarios shares the two modeldex servers (a catalog and a worker count) and one nginx; each
scenario has its own ceiling server, as that one must not even choose its answer. Repeats rotate which
server goes first, so a drift in the machine's speed (the other core busy, a thermal limit) lands on all
alike; the ratio of their medians is the figure, and the per-repeat ratios (runs back to back) its range.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from baseline import StaticAnswer, WireAnswer, nginx_etag, start_ceiling, start_nginx
from load import Request, RunResult, Series, run_wrk
from modeldex_server import start_modeldex
from procs import Server, http_status

RETRIEVE_ID = "MiniMax-M2.7"
PATTERN = "MiniMax-M2*"


@dataclass(frozen=True)
class Scenario:
    name: str  # also nginx's location for it
    label: str
    path: str
    key: str  # which key sends it: "read", "pattern" or "bad"
    status: int = 200
    conditional: bool = False  # sent with If-None-Match: the ETag of the answer
    gzip: bool = False  # sent with Accept-Encoding: gzip

    def headers(self, keys: dict[str, str]) -> dict[str, str]:
        sent = {"Authorization": f"Bearer {keys[self.key]}"}
        if self.gzip:
            sent["Accept-Encoding"] = "gzip"
        return sent


RETRIEVE = Scenario("retrieve", "retrieve, valid key", f"/v1/models/{RETRIEVE_ID}", "read")
LIST = Scenario("list", "list, default catalog (9 models)", "/v1/models", "read")
PATTERN_LIST = Scenario("list_pattern", f"list, key sees `{PATTERN}` (7 models)", "/v1/models", "pattern")
UNKNOWN = Scenario("unknown", "unknown model (404)", "/v1/models/no-such-model", "read", 404)
BAD_KEY = Scenario("bad_key", "bad key (401)", f"/v1/models/{RETRIEVE_ID}", "bad", 401)
NOT_MODIFIED = Scenario("not_modified", "list, If-None-Match (304)", "/v1/models", "read", 304, conditional=True)
LIST_10K = Scenario("list_10k", "list, 10,000 models", "/v1/models", "read")
LIST_10K_GZIP = Scenario("list_10k_gzip", "list, 10,000 models, gzip", "/v1/models", "read", gzip=True)

MODELDEX = "modeldex"  # as `modeldex serve` starts: access log on
MODELDEX_NO_LOG = "modeldex --no-access-log"
CEILING = "granian ceiling"
NGINX = "nginx"
MODELDEX_SERVERS = (MODELDEX, MODELDEX_NO_LOG)


@dataclass(frozen=True)
class Group:
    catalog: str  # "default" or "10k": which database the modeldex server serves
    workers: int
    scenarios: tuple[Scenario, ...]


GROUPS = (
    Group("default", 1, (RETRIEVE, LIST, PATTERN_LIST, UNKNOWN, BAD_KEY, NOT_MODIFIED)),
    Group("10k", 1, (LIST_10K, LIST_10K_GZIP)),
    Group("default", 2, (RETRIEVE, LIST)),
)
# --ceiling-only: the hot path's four answers against the Python ceiling, no nginx.
CEILING_GROUPS = (Group("default", 1, (RETRIEVE, LIST, UNKNOWN, BAD_KEY)),)


def run_ratios(ours: Series, theirs: Series) -> list[float]:
    """The ratio in each repeat (runs back to back): steadier than either server's req/s when something
    else on the machine comes and goes."""
    if ours is theirs:
        return []
    return [a.rps / b.rps for a, b in zip(ours.runs, theirs.runs, strict=True)]


@dataclass
class Row:
    """One line of the table: a scenario on one server, and the nginx series it is compared with (None
    without nginx)."""

    scenario: Scenario
    server: str
    workers: int
    series: Series
    nginx: Series | None = None

    @property
    def vs_nginx(self) -> float | None:
        return self.series.rps / self.nginx.rps if self.nginx is not None else None

    @property
    def nginx_run_ratios(self) -> list[float]:
        return run_ratios(self.series, self.nginx) if self.nginx is not None else []


@dataclass(frozen=True)
class Settings:
    duration: float
    repeat: int
    warmup: float


@dataclass(frozen=True)
class Fetched:
    """What modeldex answered a scenario, captured once before the run."""

    static: StaticAnswer  # status and body for nginx (a 304 scenario's is the 200 it revalidates)
    request_headers: dict[str, str]  # what wrk sends, to every server alike
    wire: WireAnswer  # exactly what the ceiling answers: status, header list and body


def fetch_answer(base: str, scenario: Scenario, keys: dict[str, str]) -> Fetched:
    """modeldex's answer to the scenario, checked."""
    headers = scenario.headers(keys)
    response = httpx.get(base + scenario.path, headers=headers, timeout=30)
    expected = 200 if scenario.conditional else scenario.status
    if response.status_code != expected:
        raise RuntimeError(f"{scenario.name}: modeldex answered {response.status_code}, not {expected}: "
                           f"{response.text[:200]}")
    content_type = response.headers.get("content-type", "")
    if content_type.split(";")[0] != "application/json":  # errors say `; charset=utf-8`, as OpenAI's do
        raise RuntimeError(f"{scenario.name}: content-type {content_type}")
    static = StaticAnswer(scenario.name, scenario.status, response.content, content_type=content_type)
    if scenario.gzip:
        wire = WireAnswer.fetch(base + scenario.path, headers)
        if ("content-encoding", "gzip") not in wire.headers:
            raise RuntimeError(f"{scenario.name}: modeldex did not compress the list")
        return Fetched(StaticAnswer(scenario.name, scenario.status, response.content, wire.body, content_type),
                       headers, wire)
    if scenario.conditional:
        headers = {**headers, "If-None-Match": response.headers["etag"]}
        response = httpx.get(base + scenario.path, headers=headers, timeout=30)
        if response.status_code != 304:
            raise RuntimeError(f"{scenario.name}: modeldex answered If-None-Match with {response.status_code}, "
                               "not 304")
    return Fetched(static, headers, WireAnswer.of(response))


def nginx_request(base: str, scenario: Scenario, keys: dict[str, str]) -> Request:
    """The same request to nginx: the same Authorization header, and nginx's own ETag for a 304."""
    headers = scenario.headers(keys)
    url = f"{base}/{scenario.name}"
    if scenario.conditional:
        headers["If-None-Match"] = nginx_etag(base, scenario.name)
        if http_status(url, headers) != 304:
            raise RuntimeError(f"nginx does not answer {scenario.name} with 304")
    return Request(url, headers, scenario.status)


@dataclass
class Target:
    """One server answering one scenario, and what its runs measured."""

    server: Server
    request: Request
    series: Series = field(default_factory=Series)
    drop_log: bool = False  # modeldex with its access log: drop each run's lines, keeping the disk bounded

    def run(self, duration: float) -> None:
        size = self.server.log_size()
        cpu = self.server.cpu_seconds()
        rps, p50, p99, requests, errors = run_wrk(self.request, duration)
        # Less sensitive than req/s to whatever else runs on the machine: it only adds up the server's CPU.
        cpu_us = (self.server.cpu_seconds() - cpu) / max(requests, 1) * 1e6
        self.series.runs.append(RunResult(rps, p50, p99, requests, errors, self.server.rss_mb(), cpu_us))
        if self.drop_log:
            self.server.truncate_log(size)


def run_group(group: Group, url: str, keys: dict[str, str], settings: Settings, workdir: Path,
              with_nginx: bool = True) -> list[Row]:
    """Measure every scenario of `group` on modeldex (defaults, and without the access log), on the
    Python ceiling answering its bytes and, `with_nginx`, on nginx serving them."""
    modeldex, base, _ = start_modeldex(url, group.workers, workdir, access_log=True)
    quiet, quiet_base, _ = start_modeldex(url, group.workers, workdir, access_log=False)
    with modeldex, quiet:
        fetched = {s.name: fetch_answer(base, s, keys) for s in group.scenarios}
        for s in group.scenarios:  # both settings must answer alike, or the comparison is of other work
            again = fetch_answer(quiet_base, s, keys)
            if again.static != fetched[s.name].static:
                raise RuntimeError(f"{s.name}: modeldex answers differently with --no-access-log")
        tag = f"{group.catalog}-w{group.workers}"
        servers: list[Server] = []
        try:
            targets: dict[str, dict[str, Target]] = {}
            for s in group.scenarios:
                answer = fetched[s.name]
                ceiling, ceiling_base = start_ceiling(workdir / f"ceiling-{tag}-{s.name}", group.workers,
                                                      answer.wire, answer.request_headers)
                servers.append(ceiling)
                # The same request everywhere: the ceiling ignores it, but granian parses it all the same.
                request = Request(s.path, answer.request_headers, s.status)
                targets[s.name] = {MODELDEX: Target(modeldex, request.at(base), drop_log=True),
                                   MODELDEX_NO_LOG: Target(quiet, request.at(quiet_base)),
                                   CEILING: Target(ceiling, request.at(ceiling_base))}
            if with_nginx:
                nginx, nginx_base = start_nginx(workdir / f"nginx-{tag}", group.workers,
                                                [fetched[s.name].static for s in group.scenarios])
                servers.append(nginx)
                for s in group.scenarios:
                    targets[s.name][NGINX] = Target(nginx, nginx_request(nginx_base, s, keys))
            measure(group, targets, settings)
        finally:
            for server in servers:
                server.stop()
    rows = []
    for s in group.scenarios:
        nginx_series = targets[s.name][NGINX].series if NGINX in targets[s.name] else None
        rows += [Row(s, name, group.workers, target.series, nginx_series)
                 for name, target in targets[s.name].items()]
    return rows


def measure(group: Group, targets: dict[str, dict[str, Target]], settings: Settings) -> None:
    for by_server in targets.values():
        for target in by_server.values():
            warm_up(target.request, settings)
    for attempt in range(settings.repeat):
        for scenario in group.scenarios:
            order = list(targets[scenario.name].items())
            turn = attempt % len(order)
            for _name, target in order[turn:] + order[:turn]:
                target.run(settings.duration)
            last = {name: target.series.runs[-1].rps for name, target in order}
            ceiling = last[CEILING]
            progress(f"{scenario.label} (workers {group.workers}), run {attempt + 1}: " + ", ".join(
                f"{name} {rps:,.0f} req/s" + (f" ({rps / ceiling:.2f}x)" if name in MODELDEX_SERVERS else "")
                for name, rps in last.items()))


def warm_up(request: Request, settings: Settings) -> None:
    """Unrecorded load first: connection set-up, caches and allocator growth stay out of the figures."""
    if settings.warmup > 0:
        run_wrk(request, settings.warmup)


def run_peer(name: str, server: Server, base: str, scenarios: tuple[Scenario, ...], headers: dict[str, str],
             settings: Settings) -> dict[str, Series]:
    """The same scenarios against a peer (its own key); its nginx figures are the main run's."""
    results: dict[str, Series] = {}
    for scenario in scenarios:
        target = Target(server, Request(base + scenario.path, headers, scenario.status))
        warm_up(target.request, settings)
        for attempt in range(settings.repeat):
            target.run(settings.duration)
            progress(f"{name} {scenario.label}, run {attempt + 1}: {target.series.runs[-1].rps:,.0f} req/s")
        results[scenario.name] = target.series
    return results


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)
