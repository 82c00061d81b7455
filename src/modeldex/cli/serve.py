"""`modeldex serve`: run the HTTP server (granian) on the catalog."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import click

from modeldex.catalog import retention
from modeldex.catalog.limits import parse_limit
from modeldex.catalog.service import Catalog
from modeldex.cli.backend import to_stderr
from modeldex.cli.common import database_url_option, handle_errors, open_catalog, redact, secret_option
from modeldex.cli.supervisor import ReapSafeWorkers
from modeldex.config import BACKLOG, HEADER_TIMEOUT_S, MAX_CONNECTIONS, ServerSettings, http_layer, resolve_database_url
from modeldex.logs import logging_config

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when a worker imports it

FIRST_KEY_NAME = "admin"


def _terminal() -> object | None:
    """The stream that is a terminal, if any: a first key may be shown there and nowhere else."""
    for stream in (sys.stderr, sys.stdout):
        if stream.isatty():
            return stream
    return None


def _as_json_log_line(message: str) -> None:
    """`serve`'s own notes under --log-format json: objects like every other line of the log (a log pipeline
    parses each line as JSON), not text among them."""
    import logging

    from modeldex.logs import JsonFormatter

    record = logging.makeLogRecord({"name": "modeldex.serve", "levelname": "INFO", "msg": message})
    click.echo(JsonFormatter().format(record), err=True)


def _first_key(catalog: Catalog, host: str, port: int, https: bool = False,
               say: Callable[[str], None] = to_stderr) -> None:
    """On an empty key table, give the person at the terminal a key; a log file gets instructions only."""
    if catalog.has_active_keys():
        return
    terminal = _terminal()
    if terminal is None:
        say("modeldex: no API keys exist yet. Create one with:\n"
            f"  modeldex keys create {FIRST_KEY_NAME} --scope admin")
        return
    _record, secret = catalog.create_key(FIRST_KEY_NAME, "admin")
    base = f"{'https' if https else 'http'}://{url_host(host)}:{port}"
    click.echo(
        "\n"
        f"  No API keys existed, so modeldex created an admin key named {FIRST_KEY_NAME!r}.\n"
        "  It is shown this once, here on your terminal, and stored only as a hash:\n\n"
        f"    {secret}\n\n"
        "  Try it:\n"
        f"    curl -H 'Authorization: Bearer {secret}' {base}/v1/models\n\n"
        "  More keys: modeldex keys create NAME [--scope read|admin]\n",
        file=terminal,  # type: ignore[arg-type]
    )


def _check_limit(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    try:
        parse_limit(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _check_retention(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    try:
        parsed = retention.parse_retention(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return None if parsed is None else str(parsed)


def _check_redis_url(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Refused here rather than by every worker as it starts; the message never repeats the URL (it may hold
    a password)."""
    if value:
        from redis.connection import parse_url

        try:
            parse_url(value)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _check_tls(certfile: str, keyfile: str) -> None:
    """Load the certificate and key as the server will, so a bad pair is one line here, before a first key is
    made or "listening" said, not a traceback from the server. An encrypted key is refused rather than
    asked for its passphrase (the server could not ask)."""
    import ssl

    def no_passphrase() -> str:
        raise click.ClickException(f"--ssl-keyfile {keyfile} is encrypted: give an unencrypted key")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        try:
            context.load_verify_locations(cafile=certfile)  # the certificate alone: which file is wrong
        except ssl.SSLError:
            raise click.ClickException(f"--ssl-certfile {certfile} holds no PEM certificate") from None
        try:
            context.load_cert_chain(certfile, keyfile, password=no_passphrase)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise click.ClickException(f"--ssl-keyfile {keyfile} is not the key of the certificate in "
                                           f"--ssl-certfile {certfile}") from None
            raise click.ClickException(f"--ssl-keyfile {keyfile} holds no PEM private key") from None
    except OSError as exc:
        raise click.ClickException(f"cannot read --ssl-certfile {certfile} or --ssl-keyfile {keyfile}: "
                                   f"{exc.strerror or exc}") from None


def _check_forwarded_allow_ips(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """Refused here rather than by every worker as it starts (each one's traceback, then a crash loop)."""
    from modeldex.api.client_address import parse_networks

    try:
        parse_networks(tuple(ip.strip() for ip in value.split(",") if ip.strip()))
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (give addresses or CIDR ranges, comma-separated, or '*')") from None
    return value


def _check_cors_origins(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Each origin exactly as a browser sends it in `Origin`, which is compared as text: `https://ui.example/`
    (a trailing slash), `HTTPS://UI.example` or `https://ui.example:443` would be accepted and never match."""
    from urllib.parse import urlsplit

    origins = tuple(piece.strip() for value in values for piece in value.split(",") if piece.strip())
    for origin in origins:
        if origin == "*":
            continue
        try:
            parts = urlsplit(origin)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise click.BadParameter(f"{origin!r} is not an origin: give scheme://host[:port], as in "
                                     "'https://ui.example', or '*'")
        scheme = parts.scheme.lower()
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        default_port = 443 if scheme == "https" else 80
        canonical = f"{scheme}://{host}" + (f":{port}" if port is not None and port != default_port else "")
        if origin != canonical:
            raise click.BadParameter(f"{origin!r} would never match: browsers send it as {canonical!r} (no path, "
                                     "lower case, no default port)")
    return origins


def url_host(host: str) -> str:
    """A host as it goes in a URL: an IPv6 address in brackets (`http://[::1]:8000`)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _check_port_free(host: str, port: int, reuse_port: bool = False) -> None:
    """Refuse a port another server listens on. granian binds with SO_REUSEPORT, so a second server on the
    same port would start without a word and the kernel would share connections between the two (two
    catalogs, keys valid on one only). A test bind without SO_REUSEPORT fails on any listener there;
    SO_REUSEADDR keeps a recently closed server's TIME_WAIT connections from counting. With `reuse_port`
    the test bind shares the port as granian will: only an address it could not bind either is an error."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise click.BadParameter(f"cannot resolve {host!r}: {exc.strerror}", param_hint="--host") from None
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and not reuse_port:
                    raise click.ClickException(
                        f"port {port} on {host} is in use (another modeldex?): stop that server, choose another "
                        "--port, or pass --reuse-port to share the port with it") from None
                if exc.errno == errno.EADDRINUSE:
                    raise click.ClickException(f"port {port} on {host} is in use by a server that does not share "
                                               "it: --reuse-port shares a port only with servers that allow it") from None
                raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to bind.")
@click.option("--reuse-port", is_flag=True, envvar="MODELDEX_REUSE_PORT",
              help="Start even if another server listens on --port, sharing it (the kernel spreads connections "
              "between the servers). Without it, a port in use is an error.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes; each serves from its own in-memory copy of the catalog.")
@click.option("--refresh-interval", default=0.2, show_default=True, type=click.FloatRange(0.01, 10),
              help="Seconds between checks for catalog changes made elsewhere (CLI, other workers).")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One log line per request (request id, method, path, status, duration, key name).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              envvar="MODELDEX_LOG_FORMAT", help="Readable lines, or one JSON object per line.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--metadata/--no-metadata", default=False, show_default=True, envvar="MODELDEX_METADATA",
              help="Answer every model with its metadata (context_length, pricing, ...), not only on "
              "?expand=metadata.")
@click.option("--rate-limit", envvar="MODELDEX_RATE_LIMIT", default=None, callback=_check_limit,
              help="Default requests per key, e.g. 600/m or 20/s (a key's own limit wins). Default: unlimited.")
@click.option("--auth-failure-limit", envvar="MODELDEX_AUTH_FAILURE_LIMIT", default="30/m", show_default=True,
              callback=_check_limit,
              help="Failed authentications per client address before 429 ('off' or 'unlimited' to disable).")
@click.option("--redis-url", envvar="MODELDEX_REDIS_URL", default=None, callback=_check_redis_url,
              help="Keep rate-limit buckets in Redis, shared by every worker and replica (e.g. redis://127.0.0.1:6379/0).")
@click.option("--redis-timeout", envvar="MODELDEX_REDIS_TIMEOUT", default=0.05, show_default=True,
              type=click.FloatRange(0.001, 5),
              help="Seconds to connect to or hear from Redis; past it (or if Redis is down) limits are "
              "counted in each process for a few seconds, and requests never fail or wait for Redis.")
@click.option("--cors-origin", "cors_origins", multiple=True, envvar="MODELDEX_CORS_ORIGINS",
              callback=_check_cors_origins,
              help="Allow browser requests from this origin (repeatable; '*' for any). Default: CORS off.")
@click.option("--forwarded-allow-ips", envvar="MODELDEX_FORWARDED_ALLOW_IPS", default="",
              callback=_check_forwarded_allow_ips,
              help="Comma list of proxy addresses/CIDRs (or '*') whose X-Forwarded-For names the client.")
@click.option("--max-header-bytes", type=click.IntRange(1024, 1 << 20), default=ServerSettings.max_header_bytes,
              show_default=True, help="Larger request headers get 431.")
@click.option("--max-body-bytes", type=click.IntRange(1024, 1 << 30), default=4 * 1024 * 1024, show_default=True,
              help="Larger admin request bodies get 413.")
@click.option("--metrics-token", envvar="MODELDEX_METRICS_TOKEN", default=None,
              help="A bearer token that may read /metrics (admin keys always may). Prefer the environment "
              "variable or --metrics-token-file: command lines are visible to every user (ps).")
@click.option("--metrics-token-file", envvar="MODELDEX_METRICS_TOKEN_FILE", default=None,
              type=click.Path(dir_okay=False), help="Read the metrics token from this file.")
@click.option("--public-metrics", is_flag=True, help="Serve /metrics on the API port without any key.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Also serve /metrics, without a key, on this port (bound to --metrics-host).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Serve HTTPS with this certificate (PEM); or terminate TLS in a proxy in front.")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--change-retention", envvar="MODELDEX_CHANGE_RETENTION", default=retention.DEFAULT,
              show_default=True, callback=_check_retention,
              help="Keep the change feed and revoked keys this long (30d, 12h), or this many catalog "
              "versions (100000); 'off' keeps them forever.")
@click.option("--shutdown-timeout", type=click.IntRange(1, 600), default=30, show_default=True,
              help="On SIGTERM, seconds to let in-flight requests finish before workers are killed.")
@click.option("--backlog", type=click.IntRange(128, 65535), default=BACKLOG, show_default=True,
              help="Connections the kernel queues until a worker accepts them (capped by net.core.somaxconn).")
@click.option("--max-connections", type=click.IntRange(16, 1_000_000), default=MAX_CONNECTIONS, show_default=True,
              help="Open connections per worker, idle ones included; past it new ones wait in the backlog.")
@click.option("--header-timeout", type=click.FloatRange(0.1, 60), default=HEADER_TIMEOUT_S, show_default=True,
              help="Seconds a client has to finish a request's headers once it starts sending them; then "
              "the connection is closed.")
@click.option("--body-timeout", type=click.FloatRange(0.1, 3600), default=60, show_default=True,
              help="Seconds a request body may go with no part of it arriving (a stalled or deliberately slow "
              "upload); then 408 and nothing is done.")
@click.option("--database-timeout", type=click.FloatRange(0.5, 600), default=5.0, show_default=True,
              envvar="MODELDEX_DATABASE_TIMEOUT",
              help="Seconds any wait on the database may last (connecting, a statement, a lock); past it, "
              "writes answer 503 and /readyz says the database is unreachable.")
@click.option("--upstream-connect-timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              envvar="MODELDEX_UPSTREAM_CONNECT_TIMEOUT", help="Inference: seconds to connect to an upstream.")
@click.option("--upstream-first-byte-timeout", type=click.FloatRange(0.1, 86400), default=600.0, show_default=True,
              envvar="MODELDEX_UPSTREAM_FIRST_BYTE_TIMEOUT",
              help="Inference: seconds from sending a request to the upstream's answer starting (then the next "
              "route is tried).")
@click.option("--upstream-idle-timeout", type=click.FloatRange(0.1, 86400), default=120.0, show_default=True,
              envvar="MODELDEX_UPSTREAM_IDLE_TIMEOUT",
              help="Inference: longest silence inside a streamed answer before it is ended with an error event.")
@click.option("--upstream-total-timeout", type=click.FloatRange(0.1, 86400), default=1800.0, show_default=True,
              envvar="MODELDEX_UPSTREAM_TOTAL_TIMEOUT", help="Inference: longest a whole request may take.")
@click.option("--upstream-attempts", type=click.IntRange(1, 10), default=3, show_default=True,
              envvar="MODELDEX_UPSTREAM_ATTEMPTS",
              help="Inference: routes tried per request (on connect errors, timeouts before the first byte, 429, 5xx).")
@click.option("--max-inference-body-bytes", type=click.IntRange(1024, 1 << 31), default=64 * 1024 * 1024,
              show_default=True, envvar="MODELDEX_MAX_INFERENCE_BODY_BYTES",
              help="Larger inference request bodies (audio uploads included) get 413.")
@click.option("--jwks-max-age", type=click.FloatRange(1, 86400), default=300.0, show_default=True,
              envvar="MODELDEX_JWKS_MAX_AGE",
              help="Issuers' key sets are fetched again at least this often (seconds; sooner if their cache "
              "headers say so): a key removed from a provider's set stops verifying tokens within this.")
@click.option("--jwks-min-refresh", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              envvar="MODELDEX_JWKS_MIN_REFRESH",
              help="A token with an unknown key id fetches its issuer's key set again at most once per this "
              "many seconds.")
@click.option("--console/--no-console", default=True, show_default=True, envvar="MODELDEX_CONSOLE",
              help="Serve the web console at /console (admin keys sign in).")
@database_url_option
@handle_errors
def serve(host: str, port: int, reuse_port: bool, workers: int, refresh_interval: float, access_log: bool, log_format: str,
          log_level: str, metadata: bool, rate_limit: str | None, auth_failure_limit: str | None,
          redis_url: str | None, redis_timeout: float, cors_origins: tuple[str, ...], forwarded_allow_ips: str,
          max_header_bytes: int, max_body_bytes: int, metrics_token: str | None, metrics_token_file: str | None,
          public_metrics: bool, metrics_port: int | None, metrics_host: str, ssl_certfile: str | None, ssl_keyfile: str | None,
          change_retention: str | None, shutdown_timeout: int, upstream_connect_timeout: float,
          upstream_first_byte_timeout: float, upstream_idle_timeout: float, upstream_total_timeout: float,
          upstream_attempts: int, max_inference_body_bytes: int, jwks_max_age: float, jwks_min_refresh: float,
          backlog: int, max_connections: int, header_timeout: float, body_timeout: float, database_timeout: float,
          console: bool, database_url: str | None) -> None:
    """Serve the OpenAI-compatible Models API."""
    from granian.constants import Interfaces, Loops

    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise click.UsageError("--ssl-certfile and --ssl-keyfile go together")
    if metrics_port is not None and metrics_port == port:
        raise click.UsageError("--metrics-port must differ from --port: the API listens there")
    if ssl_certfile and ssl_keyfile:
        _check_tls(ssl_certfile, ssl_keyfile)
    metrics_token = secret_option(metrics_token, metrics_token_file, "--metrics-token")
    url = resolve_database_url(database_url)
    say = _as_json_log_line if log_format == "json" else to_stderr
    with open_catalog(url, say) as catalog:  # creates (SQLite), checks the schema and seeds before any worker starts
        _check_port_free(host, port, reuse_port)  # before a first key is made for a server that will not start
        _first_key(catalog, host, port, https=bool(ssl_certfile), say=say)
        model_count = catalog.count_models()
    settings = ServerSettings(
        database_url=url, refresh_interval=refresh_interval, access_log=access_log, log_format=log_format,
        metadata=metadata, rate_limit=rate_limit, auth_failure_limit=auth_failure_limit, redis_url=redis_url,
        redis_timeout=redis_timeout, cors_origins=cors_origins,
        forwarded_allow_ips=tuple(ip.strip() for ip in forwarded_allow_ips.split(",") if ip.strip()),
        max_header_bytes=max_header_bytes, max_body_bytes=max_body_bytes, body_timeout=body_timeout,
        metrics_token=metrics_token,
        public_metrics=public_metrics, change_retention=change_retention,
        upstream_connect_timeout=upstream_connect_timeout,
        upstream_first_byte_timeout=upstream_first_byte_timeout, upstream_idle_timeout=upstream_idle_timeout,
        upstream_total_timeout=upstream_total_timeout, upstream_attempts=upstream_attempts,
        max_inference_body_bytes=max_inference_body_bytes, jwks_max_age=jwks_max_age,
        jwks_min_refresh=jwks_min_refresh, database_timeout=database_timeout, console=console,
        tls=bool(ssl_certfile),
    )
    os.environ.update(settings.to_env())
    _raise_open_files_limit(max_connections + 1024, say)  # per process: each worker holds its own connections
    # Each worker writes its metric samples here; any of them (or the metrics port) adds them up.
    metrics_dir = tempfile.mkdtemp(prefix="modeldex-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    if metrics_port is not None:
        try:
            _serve_metrics(metrics_host, metrics_port, url, database_timeout)
        except click.ClickException:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            raise
    scheme = "https" if ssl_certfile else "http"
    say(f"modeldex: {model_count} models from {redact(url)}; listening on {scheme}://{url_host(host)}:{port}")
    http1_settings, http2_settings = http_layer(max_header_bytes, header_timeout)
    server = _granian_server()(
        "modeldex.api.app:create_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.RSGI,  # one call per answer: see api/asgi_bridge.py
        websockets=False,  # modeldex serves none: an upgrade request is a plain request, and the app need not ask
        loop=Loops.uvloop,
        workers=workers,
        log_dictconfig=logging_config(log_level.upper(), log_format),
        log_level=log_level,
        ssl_cert=Path(ssl_certfile) if ssl_certfile else None,
        ssl_key=Path(ssl_keyfile) if ssl_keyfile else None,
        workers_kill_timeout=shutdown_timeout,
        backlog=backlog,
        backpressure=max_connections,
        # The whole request head bounded in granian's HTTP layer too (`http_layer`).
        http1_settings=http1_settings,
        http2_settings=http2_settings,
        # A worker that dies (OOM killer, a crash, SIGKILL) is replaced and the others keep serving; granian
        # itself gives up if the same worker dies again within 5.5 s of its respawn (a crash loop).
        respawn_failed_workers=True,
    )
    try:
        server.serve()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


# The help names each option's environment variable (a service sets them; "prefer the environment variable"
# for --metrics-token must say which). In the help text, not by click's show_envvar, which would also put
# "(env var: ...)" in every error about a value given on the command line.
for _option in serve.params:
    if isinstance(_option, click.Option) and isinstance(_option.envvar, str) and not _option.show_envvar:
        _option.help = f"{_option.help or ''}  [env var: {_option.envvar}]".lstrip()


def _raise_open_files_limit(wanted: int, say: Callable[[str], None] = to_stderr) -> None:
    """Every connection is a file descriptor, and a common default soft limit is 1,024 per process: raise
    the soft limit towards the hard one (the workers inherit it), and say so if even that is short."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < wanted:
        say(f"modeldex: at most {soft} open files per process (ulimit -n); --max-connections is limited by it")


def _granian_server() -> type:
    """granian's server, except in a worker told to stop before it has its own signal handlers.

    A worker is forked with the supervisor's SIGTERM/SIGINT handler, which only flags the supervisor's
    (copied) state; until the worker installs its own, some 100 ms into its start, a stop signal was
    lost and the supervisor waited --shutdown-timeout (30 s) to kill it. Such a worker serves nothing yet,
    so it simply exits. Its workers' liveness comes from their exit pipes (ReapSafeWorkers: a worker that
    has exited is never killed as one that "refused to gracefully stop")."""
    from granian import Granian

    class Server(ReapSafeWorkers, Granian):  # type: ignore[misc,valid-type]
        def signal_handler_interrupt(self, *args: object, **kwargs: object) -> None:
            if os.getpid() != self.pid:
                os._exit(0)
            super().signal_handler_interrupt(*args, **kwargs)

    return Server


def _serve_metrics(host: str, port: int, database_url: str, database_timeout: float) -> None:
    """/metrics on its own port, from this (the supervising) process, adding up every worker's samples."""
    import time

    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    from modeldex.ops.metrics import DeadWorkerSweeper, UpstreamCollector
    from modeldex.store import open_store

    # Importing the metrics made this process gauge files of its own, never set: it is no worker, but while it
    # lives its modeldex_store_up of 0 was every scrape's "lowest worker" (stuck at 0 with --metrics-port).
    multiprocess.mark_process_dead(os.getpid(), os.environ[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    registry.register(DeadWorkerSweeper())
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    store = open_store(database_url, timeout_s=database_timeout)
    registry.register(UpstreamCollector(lambda: store.upstream_health(time.time())))
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        store.close()
        raise click.ClickException(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
