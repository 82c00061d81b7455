"""The baselines on modeldex's exact bytes: a private nginx serving them as static files (the ceiling),
and granian with a Python handler that does no work (the Python ceiling, `noop_handler.py`).

Each scenario gets a location of its own (`/<scenario>`). A 200 is a file; a 401 or 404 is `return`
with `error_page` pointing at a file holding modeldex's body, so the status and the bytes are the same;
a 304 is nginx's own If-None-Match handling of a file with the same bytes as modeldex's answer.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from procs import HOST, Server, free_port, http_status


@dataclass(frozen=True)
class StaticAnswer:
    """What nginx must answer for one scenario: the status and body modeldex gave."""

    name: str
    status: int
    body: bytes


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        raise RuntimeError("nginx is not installed (bench/run.sh installs it)")
    return found


def _location(answer: StaticAnswer, root: Path) -> str:
    path = root / f"{answer.name}.json"
    if answer.status in (200, 304):  # a 304 scenario is a 200 file asked for with If-None-Match
        return f"    location = /{answer.name} {{ alias {path}; }}\n"
    return (f"    location = /{answer.name} {{\n"
            f"        error_page {answer.status} /_bodies/{answer.name}.json;\n"
            f"        return {answer.status};\n"
            f"    }}\n")


def write_config(directory: Path, port: int, workers: int, answers: list[StaticAnswer]) -> Path:
    """nginx.conf with everything (pid, logs, temp paths) inside `directory`."""
    bodies = directory / "_bodies"
    bodies.mkdir(parents=True, exist_ok=True)
    for answer in answers:
        (bodies / f"{answer.name}.json").write_bytes(answer.body)
    # nginx's workers run as `nobody` when started by root: let them read the files (the directories above
    # must let them through: run.py makes its work directory 0711).
    for path in (directory, bodies, *bodies.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    temp = {name: directory / f"tmp_{name}" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    locations = "".join(_location(answer, bodies) for answer in answers)
    config = f"""daemon off;
worker_processes {workers};
pid {directory}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    types {{ }}
    default_type application/json;
    access_log off;
    # From memory rather than sendfile: on loopback this is nginx's faster way (5.4k against 3.0k req/s for
    # an 850 kB list, measured here), and the ceiling should be nginx at its best.
    sendfile off;
    output_buffers 1 1m;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    open_file_cache max=64;
    client_body_temp_path {temp['client_body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    server {{
        listen {HOST}:{port};
        server_name localhost;
        location /_bodies/ {{ internal; root {directory}; }}
{locations}    }}
}}
"""
    conf = directory / "nginx.conf"
    conf.write_text(config)
    return conf


def start_nginx(directory: Path, workers: int, answers: list[StaticAnswer]) -> tuple[Server, str]:
    """Start nginx with `workers` worker processes; returns the server and its base URL."""
    port = free_port()
    conf = write_config(directory, port, workers, answers)
    server = Server("nginx", [nginx_binary(), "-c", str(conf), "-p", str(directory), "-e", "stderr"],
                    directory / "nginx.log")
    base = f"http://{HOST}:{port}"
    server.wait_ready(lambda: http_status(f"{base}/{answers[0].name}") == answers[0].status, timeout=15)
    _check_answers(base, answers)
    return server, base


def _check_answers(base: str, answers: list[StaticAnswer]) -> None:
    """nginx must answer exactly what modeldex did, or the ratio compares different work."""
    for answer in answers:
        response = httpx.get(f"{base}/{answer.name}")
        expected_status = 200 if answer.status == 304 else answer.status
        if response.status_code != expected_status or response.content != answer.body:
            raise RuntimeError(f"nginx answers {answer.name} with {response.status_code} "
                               f"{response.content[:80]!r}, not {expected_status} {answer.body[:80]!r}")
        if response.headers.get("content-type") != "application/json":
            raise RuntimeError(f"nginx answers {answer.name} as {response.headers.get('content-type')}")


def nginx_etag(base: str, name: str) -> str:
    """nginx's own ETag for a file, for its If-None-Match (304) scenario."""
    etag = httpx.get(f"{base}/{name}").headers.get("etag")
    if not etag:
        raise RuntimeError(f"nginx sent no ETag for {name}")
    return etag



NOOP_HANDLER_HEADERS = ("content-type", "etag", "cache-control", "vary", "x-request-id")


def start_noop_handler(directory: Path, workers: int, answers: dict[str, tuple[int, dict[str, str], bytes]]
                       ) -> tuple[Server, str]:
    """granian with `workers` workers and the handler that does nothing but answer modeldex's bytes;
    `answers` maps a scenario's name to modeldex's status, response headers and body."""
    directory.mkdir(parents=True, exist_ok=True)
    table = {f"/{name}": [status, [[h, v] for h, v in headers.items() if h in NOOP_HANDLER_HEADERS],
                          body.decode()]
             for name, (status, headers, body) in answers.items()}
    answers_file = directory / "answers.json"
    answers_file.write_text(json.dumps(table))
    port = free_port()
    granian = str(Path(sys.executable).with_name("granian"))
    here = Path(__file__).resolve().parent
    server = Server("granian no-op handler",
                    [granian, "--interface", "rsgi", "--loop", "uvloop", "--workers", str(workers),
                     "--host", HOST, "--port", str(port), "--log-level", "warning", "noop_handler:app"],
                    directory / "noop-handler.log", env={**os.environ, "NOOP_ANSWERS": str(answers_file)}, cwd=here)
    base = f"http://{HOST}:{port}"
    first = next(iter(answers))
    server.wait_ready(lambda: http_status(f"{base}/{first}") == (200 if answers[first][0] == 304
                                                                  else answers[first][0]), timeout=30)
    return server, base
