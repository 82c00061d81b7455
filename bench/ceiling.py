"""The Python ceiling: granian, served exactly as `modeldex serve` serves, running an RSGI app that does
nothing but answer one scenario's bytes.

The answer (status, header list, body) is modeldex's own, captured once before the run; it is bound into
the handler as closure constants, so a request costs one call to granian's protocol with them: no lookup,
no branch, no counter. Whatever modeldex takes beyond this is modeldex's own work. One server per
scenario, because choosing the answer by path would be per-request work.

Run by bench/baseline.py as `python ceiling.py ANSWER_FILE HOST PORT WORKERS`; granian's workers import
this module and call `create_app()` (a factory, as serve.py's `create_app`), which reads
CEILING_ANSWER (JSON: [status, [[name, value], ...], body as latin-1 text]).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

ANSWER_ENV = "CEILING_ANSWER"


def load_answer(path: str) -> tuple[int, list[tuple[str, str]], bytes]:
    with open(path, encoding="utf-8") as file:
        status, headers, body = json.load(file)
    return status, [(name, value) for name, value in headers], body.encode("latin-1")


def constant_app(status: int, headers: list[tuple[str, str]], body: bytes) -> Any:
    """An RSGI app whose whole request handling is one answer call with these constants (closure cells)."""
    # modeldex answers a 304 with response_empty and everything else with response_bytes: the same call here.
    if status == 304:
        class NotModified:
            async def __rsgi__(self, _scope: Any, protocol: Any) -> None:
                protocol.response_empty(status, headers)

        return NotModified()

    class Constant:
        async def __rsgi__(self, _scope: Any, protocol: Any) -> None:
            protocol.response_bytes(status, headers, body)

    return Constant()


def create_app() -> Any:
    return constant_app(*load_answer(os.environ[ANSWER_ENV]))


def serve(target: str, host: str, port: int, workers: int) -> None:
    """granian on `target` (a factory) with the options src/modeldex/cli/serve.py gives it, at its
    defaults: text log at info level, 30 s shutdown timeout, no TLS, the same backlog, connection limit and
    HTTP settings."""
    from granian import Granian
    from granian.constants import Interfaces, Loops

    # modeldex.config, not modeldex.cli.serve: importing serve loaded modeldex's whole app into the ceiling
    # (RSS 139 MB, not 60), which this handler must not carry.
    from modeldex.config import BACKLOG, HEADER_TIMEOUT_S, MAX_CONNECTIONS, ServerSettings, http_layer
    from modeldex.logs import logging_config

    # serve's defaults: --max-header-bytes and --header-timeout size granian's HTTP settings.
    http1_settings, http2_settings = http_layer(ServerSettings.max_header_bytes, HEADER_TIMEOUT_S)
    server = Granian(
        target,
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        websockets=False,
        loop=Loops.uvloop,
        workers=workers,
        log_dictconfig=logging_config("INFO", "text"),
        log_level="info",  # type: ignore[arg-type]
        ssl_cert=None,
        ssl_key=None,
        workers_kill_timeout=30,
        backlog=BACKLOG,
        backpressure=MAX_CONNECTIONS,
        http1_settings=http1_settings,
        http2_settings=http2_settings,
    )
    server.serve()


def main(answer_file: str, host: str, port: int, workers: int) -> None:
    os.environ[ANSWER_ENV] = answer_file
    serve("ceiling:create_app", host, port, workers)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
