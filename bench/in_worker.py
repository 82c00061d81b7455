"""What the tools that measure inside one granian worker share (hotpath_profile.py times pieces,
instructions.py counts instructions): the four Models scenarios, driving a coroutine that never
suspends, and a catalog with its keys and the worker's environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

RETRIEVE_ID = "MiniMax-M2.7"
SCENARIOS = {  # name: (path, which key)
    "retrieve": (f"/v1/models/{RETRIEVE_ID}", "read"),
    "list": ("/v1/models", "read"),
    "unknown": ("/v1/models/no-such-model", "read"),
    "bad_key": (f"/v1/models/{RETRIEVE_ID}", "bad"),
}
WARMUP_REQUESTS = 3000  # enough for the interpreter's specialisation and every lazy cache


def drive(coroutine: Any) -> Any:
    """Run a coroutine that never suspends (the hot path's promise) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the coroutine suspended")


class Measuring:
    """modeldex's app, as granian's worker serves it, except a request carrying `header`: that one goes to
    `measure(scope, protocol, header value)`, on the request's own objects."""

    header = ""

    def __init__(self) -> None:
        from modeldex.api.app import create_app

        self.app = create_app()

    def __rsgi_init__(self, loop: Any) -> None:
        self.app.__rsgi_init__(loop)

    def __rsgi_del__(self, loop: Any) -> None:
        self.app.__rsgi_del__(loop)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        value = scope.headers.get(self.header)
        if value is None:
            await self.app.__rsgi__(scope, protocol)
        else:
            self.measure(scope, protocol, value)

    def measure(self, scope: Any, protocol: Any, value: str) -> None:
        raise NotImplementedError


def prepare(workdir: Path, key_name: str) -> tuple[dict[str, str], dict[str, str]]:
    """A fresh default catalog in `workdir`, a read key and a wrong one ({"read": ..., "bad": ...}), and
    the environment of a worker serving it with serve's defaults but for the failure limit, as in the
    benchmark (or the 401s turn into 429s)."""
    # Here, not at the top: granian's workers import this module, and procs (which modeldex_server
    # imports) sets signal handlers.
    from modeldex.config import ServerSettings
    from modeldex_server import clean_env, create_key, make_catalog

    url = make_catalog(workdir / "catalog")
    read = create_key(url, key_name)
    keys = {"read": read, "bad": read[:-8] + ("0" * 8 if not read.endswith("0" * 8) else "1" * 8)}
    settings = ServerSettings(database_url=url, auth_failure_limit="off")
    (workdir / "metrics").mkdir()
    # bench/ for the worker's own modules, then the caller's PYTHONPATH: a changed copy of src/ to measure.
    inherited = os.environ.get("PYTHONPATH")
    python_path = str(Path(__file__).resolve().parent) + (os.pathsep + inherited if inherited else "")
    env = {**clean_env(), **settings.to_env(), "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
           "PYTHONPATH": python_path}
    return keys, env
