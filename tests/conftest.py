"""Fixtures that run modeldex for real: the CLI as a subprocess, the server on a free port."""

from __future__ import annotations

import compileall
import http.client
import importlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import openai
import pytest
from sqlalchemy import MetaData

import modeldex
from modeldex.catalog.seed import seed_models
from modeldex.catalog.service import Catalog
from modeldex.store import migrate, open_store
from modeldex.store.sql import create_store_engine

from . import forks, postgres, redis_server
from .forks import ForkedProcess, ForkServer
from .postgres import free_port

ROOT = Path(__file__).resolve().parent.parent
SEED_SPEC = ROOT.parent / "shared" / "seed" / "retrieve-model.openapi.yaml"
SEED_IDS = [
    "MiniMax-M3",
    "MiniMax-M3.1-Flash-Preview",
    "MiniMax-M2.7",
    "MiniMax-M2.7-highspeed",
    "MiniMax-M2.5",
    "MiniMax-M2.5-highspeed",
    "MiniMax-M2.1",
    "MiniMax-M2.1-highspeed",
    "MiniMax-M2",
]


def pytest_configure(config: pytest.Config) -> None:
    """The tests start hundreds of Python processes that import modeldex (each CLI run, each server and its
    workers): compile its modules once, up front, so that none of them compiles them again (with
    PYTHONDONTWRITEBYTECODE set, each would, without saving the result). Under xdist the controller does it."""
    if not hasattr(config, "workerinput"):
        compileall.compile_dir(Path(modeldex.__file__).parent, quiet=1)


class LazyModule:
    """A module imported on first use rather than at collection, when every xdist worker imports every test
    module: `anthropic`'s SDK alone takes 2.8 s of CPU to import (its pydantic types)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):  # what pytest's collection asks of every name in a module (_mock_name, ...)
            raise AttributeError(attribute)
        return getattr(importlib.import_module(self._name), attribute)


def status_on_a_new_connection(url: str, headers: dict[str, str] | None = None, method: str = "GET",
                               timeout: float = 5) -> int:
    """The status of one request on a connection of its own (http.client: a new httpx.Client costs ~20 ms
    of CPU, its TLS context, which polling loops paid again and again)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def cli_env(db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDEX_")}
    env["MODELDEX_DATABASE_URL"] = db_url
    env.update(extra)
    return env


_CURRENT_ITEM: list[pytest.Item] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    _CURRENT_ITEM[:] = [item]
    yield
    _CURRENT_ITEM.clear()


def pytest_unconfigure(config: pytest.Config) -> None:
    forks.close_all()


def _fresh_interpreters() -> bool:
    """Whether this test runs modeldex in new interpreters, as a user does, rather than forked from the fork
    server: when marked `cli_process` (what a process shows of itself, such as its command line), and
    everywhere with MODELDEX_TEST_CLI_FORKSERVER=0."""
    if os.environ.get("MODELDEX_TEST_CLI_FORKSERVER") == "0":
        return True
    return bool(_CURRENT_ITEM) and _CURRENT_ITEM[0].get_closest_marker("cli_process") is not None


# What `python -m modeldex` imports; what `serve` imports; what a run on PostgreSQL imports when it connects;
# the libraries a server's worker imports (its app: 0.19 s of CPU a worker, and a forked server took
# 0.47 s of CPU to answer with one worker, 1.03 s with two; 0.20 s and 0.38 s with them here); what a
# catalog's migrations import (alembic). Not prometheus_client: it picks its multiprocess mode when it is
# imported, from the directory `serve` names in the environment before its workers start.
FORK_SERVER_PRELOAD = ("modeldex.cli.main", "granian", "psycopg", "aiohttp", "jinja2", "starlette.applications",
                       "starlette.routing", "starlette.responses", "starlette.requests", "starlette.middleware",
                       "starlette.formparsers", "alembic.command", "alembic.config", "alembic.script")


def _fork_server() -> ForkServer:
    return forks.fork_server("modeldex", lambda: ForkServer(sys.executable, "modeldex", *FORK_SERVER_PRELOAD))


def run_cli(db_url: str, *args: str, check: bool = True, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    if _fresh_interpreters():
        result = subprocess.run(
            [sys.executable, "-m", "modeldex", *args],
            env=env or cli_env(db_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    else:
        result = _fork_server().run(args, env or cli_env(db_url), timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"modeldex {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def create_key(db_url: str, name: str, scope: str = "read") -> str:
    """A key for a test whose subject is not the CLI: made in this process with the call `modeldex keys
    create` makes (the database created and seeded first if new, as the CLI does), without starting a
    Python process for it. The CLI's own key commands are tested with `run_cli`."""
    store = open_store(db_url, seed=seed_models())
    try:
        return Catalog(store, actor="test-setup").create_key(name, scope)[1]
    finally:
        store.close()


class Server:
    """`modeldex serve` in a subprocess on a free port; its stdout and stderr go to `log_path`."""

    def __init__(self, db_url: str, log_path: Path, *extra_args: str) -> None:
        self.db_url = db_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.workers = int(extra_args[extra_args.index("--workers") + 1]) if "--workers" in extra_args else 1
        self._log = open(log_path, "wb")  # noqa: SIM115 (the server writes to it until stop() closes it)
        # One client for the server's lifetime: a new httpx client per request costs tens of milliseconds,
        # which would swamp the propagation times the tests measure.
        self.http = httpx.Client(timeout=10)
        args = ("serve", "--port", str(self.port), *extra_args)
        self.process: subprocess.Popen[bytes] | ForkedProcess
        if self.forked() and not _fresh_interpreters():
            # Forked from the fork server: ~0.5 s of CPU less a start than a new interpreter, for ~130
            # servers a suite run.
            self.process = _fork_server().start(args, self.environment(db_url), log_path)
        else:
            self.process = subprocess.Popen(
                [*self.command(), *args],
                env=self.environment(db_url),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: if it must be killed, its workers go with it
            )
        self._wait_ready()

    @staticmethod
    def command() -> list[str]:
        return [sys.executable, "-m", "modeldex"]

    def forked(self) -> bool:
        """Whether this server may be forked from the fork server (subclasses that run another command
        or installation say no)."""
        return type(self).command is Server.command

    @staticmethod
    def environment(db_url: str) -> dict[str, str]:
        return cli_env(db_url)

    def _wait_ready(self, timeout: float = 30) -> None:
        """Until it answers /healthz and every worker has started: a server told to stop while a worker is
        still starting can miss that worker, which then runs on until killed."""
        deadline = time.monotonic() + timeout
        started = [re.compile(rf"Started worker-{n}\b") for n in range(1, self.workers + 1)]
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                healthy = self.http.get(self.base_url + "/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                healthy = False
            if healthy and all(pattern.search(self.log()) for pattern in started):
                return
            time.sleep(0.02)
        raise AssertionError(f"server did not become ready:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def client(self, key: str, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(api_key=key, base_url=self.base_url + "/v1", max_retries=0, **kwargs)

    def get(self, path: str, key: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        all_headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        all_headers.update(headers or {})
        return self.http.get(self.base_url + path, headers=all_headers)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        self.http.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """The PostgreSQL server the tests use: MODELDEX_TEST_POSTGRES_URL, or a private cluster."""
    configured = os.environ.get(postgres.TEST_URL_ENV)
    if configured:
        yield configured
        return
    cluster = postgres.PrivatePostgres()
    yield cluster.admin_url
    cluster.destroy()


@pytest.fixture(scope="session")
def postgres_template(postgres_admin_url: str) -> Iterator[str]:
    """The name of a database migrated to the current schema once per session, in-process (as `db upgrade`
    does it): the tests' databases are copies of it. Nothing stays connected to it, so it can be copied."""
    url = postgres.create_database(postgres_admin_url)
    upgrade_database(url)
    yield postgres.database_name(url)


def upgrade_database(db_url: str) -> None:
    """Migrate a database to the current schema in this process, with what `modeldex db upgrade` runs."""
    engine = create_store_engine(db_url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


def new_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty catalog database on `backend`, at the current schema (as `db upgrade` leaves it): a new
    SQLite file (created at the newest schema on first use), or a copy of the migrated PostgreSQL template."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/catalog-{uuid.uuid4().hex[:8]}.db"
    return postgres.create_database(request.getfixturevalue("postgres_admin_url"),
                                    template=request.getfixturevalue("postgres_template"))


@pytest.fixture
def anyio_backend() -> str:
    """The in-process layer's async tests (anyio's plugin) run on asyncio, as the server does."""
    return "asyncio"


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return new_database(request.param, tmp_path, request)


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no schema at all (a new SQLite file, or a new PostgreSQL database)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/empty.db"
    return postgres.create_database(request.getfixturevalue("postgres_admin_url"))


def execute_sql(db_url: str, *statements: str) -> None:
    """Run raw SQL on a catalog database, behind modeldex's back (to break or age it on purpose)."""
    engine = create_store_engine(db_url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def dump_database(db_url: str) -> str:
    """Every row of every table, as text: to prove what is (not) stored."""
    engine = create_store_engine(db_url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(str(row) for table in metadata.sorted_tables for row in conn.execute(table.select()))
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For the tests that are about SQLite itself (its file, its default location)."""
    return f"sqlite:///{tmp_path}/catalog.db"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """Start servers on demand (`start_server(db_url, *args)`); all are stopped after the test."""
    servers: list[Server] = []

    def start(db_url: str, *args: str) -> Server:
        server = Server(db_url, tmp_path / f"server-{len(servers)}.log", *args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class Deployment:
    """One server on its own database, with an admin and a read key: shared by a module's tests."""

    def __init__(self, tmp: Path, db_url: str) -> None:
        self.db_url = db_url
        self.admin_key = create_key(self.db_url, "admin", "admin")
        self.read_key = create_key(self.db_url, "reader", "read")
        self.server = Server(self.db_url, tmp / "server.log")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(self.db_url, *args, check=check)

    def add_model(self, model_id: str, *args: str) -> None:
        """Add a model with the CLI and wait (up to the 1 s bound) until the server serves it."""
        self.cli("models", "add", model_id, *args)
        encoded = quote(model_id, safe="")
        served = wait_until(lambda: self.server.get(f"/v1/models/{encoded}", self.read_key).status_code == 200, 1.0)
        assert served is not None, f"{model_id} was not served within 1 s of being added"


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("deployment")
    deployment = Deployment(tmp, new_database(request.param, tmp, request))
    yield deployment
    deployment.server.stop()


def wait_until(condition, timeout: float, interval: float = 0.02) -> float | None:
    """Poll `condition` until it holds; returns the seconds it took, or None if it never did."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(interval)


def read_by_the_server(server_port: int, client_port: int) -> bool:
    """Whether the server listening on `server_port` has read all that the client at `client_port` sent it on
    their connection (Linux's /proc/net/tcp: nothing left in the client's send queue nor in the server's
    receive queue): a request sent is then in the server's hands, not waiting in the kernel for it to accept
    the connection or read it, where a stop signal could still come first."""
    client_sent = server_read = False
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "01":  # ESTABLISHED
            continue
        local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
        send_queue, receive_queue = (int(queue, 16) for queue in fields[4].split(":"))
        if (local, remote) == (client_port, server_port):
            client_sent = send_queue == 0
        elif (local, remote) == (server_port, client_port):
            server_read = receive_queue == 0
    return client_sent and server_read


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The Redis the tests use, found like PostgreSQL: MODELDEX_TEST_REDIS_URL, else the one answering PING on
    127.0.0.1:6379, else a private `redis-server` on a free port, stopped at the end of the session."""
    configured = os.environ.get(redis_server.TEST_URL_ENV)
    if configured:
        yield configured
        return
    if redis_server.answers_ping(redis_server.DEFAULT_URL):
        yield redis_server.DEFAULT_URL
        return
    server = redis_server.PrivateRedis()
    yield server.url
    server.destroy()


def _uses_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and any(value == "postgresql" for value in callspec.params.values())


PEER_FIXTURES = {"litellm", "team_b"}  # servers modeldex polls over the network, started as processes


# The modules that keep a worker longest, longest first, down to ~5 s (a module timeline of the suite with
# -n 3 on an idle 2-core machine, 2026-12-02: 66 s for test_openapi, 55 s for the three LiteLLM modules as
# one unit, 4-24 s for most; ~690 worker-seconds in all). xdist hands modules out in collection order
# (pyproject's --no-loadscope-reorder), the next to a worker when it has two tests left, so these go first
# and the short ones fill in at the end. With the 14 longest only, the two 11-12 s modules last in the
# alphabet (test_wheel, test_worker_faults) ran last on one worker: the workers ended at 231, 236 and 249 s.
# Replayed over that run's module times, each varied by up to 25 %, this order ends 3.2 s sooner on average
# (0.5 s later at worst, 7.5 s sooner at best).
LONGEST_MODULES = ["test_openapi", "test_discovery", "test_gateway_litellm", "test_check", "test_discovery_hostile",
                   "test_cli", "test_first_hour", "test_console", "test_identity", "test_database_hang",
                   "test_discovery_credentials", "test_replicas", "test_logs_and_first_key", "test_admin_load",
                   "test_operations", "test_readme", "test_discovery_units", "test_flood", "test_soak",
                   "test_admin_api", "test_gateway", "test_worker_faults", "test_wheel", "test_inprocess_console",
                   "test_inprocess_identity", "test_visibility", "test_incremental", "test_cli_fuzz",
                   "test_catalog_file", "test_api_sdk", "test_store", "test_live_changes", "test_redis_outage"]


# The modules that start LiteLLM's proxy run on one worker, one after another: each test process that starts
# it imports LiteLLM once (~7 s of CPU, in its fork server: tests/litellm_proxy.py).
LITELLM_MODULES = {"test_discovery", "test_gateway_litellm", "test_check"}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile` (a module to a worker), with LITELLM_MODULES as one unit."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LiteLLMOnOneWorker(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid)
            return "litellm" if Path(module).stem in LITELLM_MODULES else module

    return LiteLLMOnOneWorker(config, log)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark what a test needs: `postgres` when it is parametrized on the PostgreSQL backend (the tests that
    make a cluster or database of their own carry the mark themselves), `redis` when it uses `redis_url`,
    `peer` when it uses an upstream server. Then order the modules longest first (LONGEST_MODULES; the sort
    is stable, so each module's tests keep their order)."""
    rank = {name: index for index, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))
    for item in items:
        if _uses_postgres(item):
            item.add_marker(pytest.mark.postgres)
        if "redis_url" in item.fixturenames:
            item.add_marker(pytest.mark.redis)
        if PEER_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.peer)


def pytest_sessionfinish(session, exitstatus) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL tests must run, never skip: a selected one that skipped fails the run (locally and in CI).
    Tests deselected with `-m "not postgres"` never run, so they do not count. (An xdist worker hands its
    measurements to the controller here; the controller sees every worker's reports.)"""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["modeldex_reports"] = list(REPORTS)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = [r.nodeid for r in (reporter.stats.get("skipped", []) if reporter else [])
               if "postgres" in getattr(r, "keywords", {})]
    if skipped:
        if reporter:
            reporter.write_line(f"FAILED: {len(skipped)} PostgreSQL tests were skipped, e.g. {skipped[0]}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


REPORTS: list[str] = []


def report(line: str) -> None:
    """A measured figure to show at the end of the run (e.g. propagation times)."""
    REPORTS.append(line)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # type: ignore[no-untyped-def]
    """xdist: a worker is done; keep the figures it measured for the summary."""
    REPORTS.extend(getattr(node, "workeroutput", {}).get("modeldex_reports", []))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if REPORTS:
        terminalreporter.section("modeldex measurements")
        for line in REPORTS:
            terminalreporter.write_line(line)
