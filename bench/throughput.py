"""Request scenarios under load: modeldex and, on the same bytes, nginx (the ceiling) and granian with a
handler that does no work (the Python ceiling), run in turns.

Each group of scenarios shares one modeldex server (a catalog and a worker count), one nginx and one
no-op granian with as many workers. Repeats rotate which goes first, so a drift in the machine's speed
(the other core busy, a thermal limit) lands on all alike; the ratio of their medians is the figure.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from baseline import StaticAnswer, nginx_etag, start_nginx, start_noop_handler
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

    def headers(self, keys: dict[str, str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[self.key]}"}


RETRIEVE = Scenario("retrieve", "retrieve, valid key", f"/v1/models/{RETRIEVE_ID}", "read")
LIST = Scenario("list", "list, default catalog (9 models)", "/v1/models", "read")
PATTERN_LIST = Scenario("list_pattern", f"list, key sees `{PATTERN}` (7 models)", "/v1/models", "pattern")
UNKNOWN = Scenario("unknown", "unknown model (404)", "/v1/models/no-such-model", "read", 404)
BAD_KEY = Scenario("bad_key", "bad key (401)", f"/v1/models/{RETRIEVE_ID}", "bad", 401)
NOOP_SERVER = "granian, no-op handler"
NOT_MODIFIED = Scenario("not_modified", "list, If-None-Match (304)", "/v1/models", "read", 304, conditional=True)
LIST_10K = Scenario("list_10k", "list, 10,000 models", "/v1/models", "read")


@dataclass(frozen=True)
class Group:
    catalog: str  # "default" or "10k": which database the modeldex server serves
    workers: int
    scenarios: tuple[Scenario, ...]


GROUPS = (
    Group("default", 1, (RETRIEVE, LIST, PATTERN_LIST, UNKNOWN, BAD_KEY, NOT_MODIFIED)),
    Group("10k", 1, (LIST_10K,)),
    Group("default", 2, (RETRIEVE, LIST)),
)


@dataclass
class Row:
    """One line of the table: a scenario on one server, and the nginx series it is compared with."""

    scenario: Scenario
    server: str
    workers: int
    series: Series
    ceiling: Series | None = None

    @property
    def vs_ceiling(self) -> float | None:
        return self.series.rps / self.ceiling.rps if self.ceiling is not None else None

    @property
    def run_ratios(self) -> list[float]:
        """The ratio to nginx in each repeat (runs back to back): steadier than either server's req/s when
        something else on the machine comes and goes."""
        if self.ceiling is None or self.ceiling is self.series:
            return []
        return [ours.rps / theirs.rps for ours, theirs in zip(self.series.runs, self.ceiling.runs, strict=True)]


@dataclass(frozen=True)
class Settings:
    duration: float
    repeat: int
    warmup: float


def fetch_answer(base: str, scenario: Scenario, keys: dict[str, str]
                 ) -> tuple[StaticAnswer, dict[str, str], dict[str, str]]:
    """modeldex's answer (status and bytes), checked; the headers wrk must send it; the response's headers."""
    headers = scenario.headers(keys)
    response = httpx.get(base + scenario.path, headers=headers, timeout=30)
    expected = 200 if scenario.conditional else scenario.status
    if response.status_code != expected:
        raise RuntimeError(f"{scenario.name}: modeldex answered {response.status_code}, not {expected}: "
                           f"{response.text[:200]}")
    if response.headers.get("content-type") != "application/json":
        raise RuntimeError(f"{scenario.name}: content-type {response.headers.get('content-type')}")
    if scenario.conditional:
        headers = {**headers, "If-None-Match": response.headers["etag"]}
        status = http_status(base + scenario.path, headers)
        if status != 304:
            raise RuntimeError(f"{scenario.name}: modeldex answered If-None-Match with {status}, not 304")
    return StaticAnswer(scenario.name, scenario.status, response.content), headers, dict(response.headers)


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

    def run(self, duration: float) -> None:
        rps, p50, p99, requests, errors = run_wrk(self.request, duration)
        self.series.runs.append(RunResult(rps, p50, p99, requests, errors, self.server.rss_mb()))


def run_group(group: Group, url: str, keys: dict[str, str], settings: Settings, workdir: Path) -> list[Row]:
    """Measure every scenario of `group` on modeldex, on nginx serving modeldex's bytes, and on granian
    with a no-op handler answering them."""
    modeldex, base, _startup = start_modeldex(url, group.workers, workdir)
    with modeldex:
        fetched = {s.name: fetch_answer(base, s, keys) for s in group.scenarios}
        nginx_dir = workdir / f"nginx-{group.catalog}-w{group.workers}"
        nginx, nginx_base = start_nginx(nginx_dir, group.workers, [answer for answer, _, _ in fetched.values()])
        noop, noop_base = start_noop_handler(
            workdir / f"noop-{group.catalog}-w{group.workers}", group.workers,
            {name: (answer.status, response_headers, answer.body)
             for name, (answer, _, response_headers) in fetched.items()})
        with nginx, noop:
            targets = {s.name: (Target(modeldex, Request(base + s.path, fetched[s.name][1], s.status)),
                                Target(nginx, nginx_request(nginx_base, s, keys)),
                                Target(noop, Request(f"{noop_base}/{s.name}", fetched[s.name][1], s.status)))
                       for s in group.scenarios}
            for trio in targets.values():
                for target in trio:
                    warm_up(target.request, settings)
            for attempt in range(settings.repeat):
                for scenario in group.scenarios:
                    trio = targets[scenario.name]
                    turn = attempt % len(trio)
                    for target in trio[turn:] + trio[:turn]:
                        target.run(settings.duration)
                    ours, ceiling, bare = (target.series.runs[-1].rps for target in trio)
                    progress(f"{scenario.label} (workers {group.workers}), run {attempt + 1}: modeldex "
                             f"{ours:,.0f} req/s, nginx {ceiling:,.0f}, no-op handler {bare:,.0f}")
    rows = []
    for s in group.scenarios:
        ours, ceiling, bare = targets[s.name]
        rows += [Row(s, "modeldex", group.workers, ours.series, ceiling.series),
                 Row(s, NOOP_SERVER, group.workers, bare.series, ceiling.series),
                 Row(s, "nginx", group.workers, ceiling.series, ceiling.series)]
    return rows


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
