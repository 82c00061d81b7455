"""modeldex under test: fresh SQLite catalogs of a chosen size, keys made with the CLI, and the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from procs import HOST, Server, free_port, http_ok

BENCH_OWNER = "bench"
CREATED_BASE = 1_700_000_000


def modeldex_binary() -> str:
    """The `modeldex` next to the running interpreter (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("modeldex")
    return str(beside) if beside.exists() else "modeldex"


def clean_env() -> dict[str, str]:
    """The environment without MODELDEX_* settings, so the caller's own catalog or server is never touched."""
    return {name: value for name, value in os.environ.items() if not name.startswith("MODELDEX_")}


def cli(*args: str) -> str:
    """Run a modeldex CLI command; returns its stdout."""
    result = subprocess.run([modeldex_binary(), *args], check=False, capture_output=True, text=True,
                            env=clean_env(), timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"modeldex {' '.join(args[:3])} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def model_id(index: int) -> str:
    return f"bench/model-{index:06d}"


def write_catalog_file(path: Path, count: int) -> Path:
    """A catalog file (JSON, which is YAML and much faster to parse) of `count` generated models."""
    models = [{"id": model_id(i), "created": CREATED_BASE + i, "owned_by": BENCH_OWNER} for i in range(count)]
    path.write_text(json.dumps({"models": models}))
    return path


def make_catalog(directory: Path, models: int = 0) -> str:
    """A fresh database: the seeded default catalog, or exactly `models` generated ones. Returns its URL."""
    directory.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{directory / 'catalog.db'}"
    if models:
        catalog_file = write_catalog_file(directory / "catalog.json", models)
        cli("catalog", "apply", str(catalog_file), "--prune", "--yes", "--database-url", url)
    else:
        cli("models", "list", "--database-url", url)  # creates and seeds it
    return url


def create_key(url: str, name: str, scope: str = "read", pattern: str | None = None) -> str:
    args = ["keys", "create", name, "--scope", scope, "--database-url", url]
    if pattern is not None:
        args += ["--pattern", pattern]
    return cli(*args).strip()


def start_modeldex(url: str, workers: int, log_dir: Path, probe: str | None = None,
                   headers: dict[str, str] | None = None, timeout: float = 300,
                   access_log: bool = False) -> tuple[Server, str, float]:
    """Start `modeldex serve`: with its defaults, access log on (to its log file), or with --no-access-log.

    Ready when /healthz answers 200 and, if given, an authenticated GET of `probe` too. Returns the server,
    its base URL and the seconds from spawning it to ready (the startup time).
    """
    port = free_port()
    argv = [modeldex_binary(), "serve", "--host", HOST, "--port", str(port), "--workers", str(workers),
            "--database-url", url,
            # The one setting off its default: the 401 scenario measures the wrong-key path itself; with the
            # default limit a flood of bad keys from one address turns into (cheaper) 429s after 30, and so
            # would every later request from 127.0.0.1. Without failures both settings cost the same.
            "--auth-failure-limit", "off"]
    if not access_log:
        argv.append("--no-access-log")
    name = f"modeldex --workers {workers}{'' if access_log else ' --no-access-log'}"
    server = Server(name, argv, log_dir / f"modeldex-{port}.log", env=clean_env())
    base = f"http://{HOST}:{port}"

    def ready() -> bool:
        return http_ok(f"{base}/healthz") and (probe is None or http_ok(base + probe, headers))

    return server, base, server.wait_ready(ready, timeout)
