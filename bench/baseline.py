"""The baselines on modeldex's exact bytes: a private nginx serving them as static files, and granian
with an app that does nothing but answer them (the Python ceiling, `ceiling.py`).

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
    gzipped: bytes | None = None  # modeldex's compressed bytes, served by nginx's gzip_static beside `body`
    content_type: str = "application/json"  # as modeldex labelled it (errors: `; charset=utf-8`)


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        raise RuntimeError("nginx is not installed (bench/run.sh installs it)")
    return found


def _location(answer: StaticAnswer, root: Path) -> str:
    path = root / f"{answer.name}.json"
    labelled = f'default_type "{answer.content_type}";'  # the content type modeldex sent
    if answer.gzipped is not None:  # the .gz beside the file, sent as it is to clients that take gzip
        return f"    location = /{answer.name} {{ gzip_static on; alias {path}; {labelled} }}\n"
    if answer.status in (200, 304):  # a 304 scenario is a 200 file asked for with If-None-Match
        return f"    location = /{answer.name} {{ alias {path}; {labelled} }}\n"
    return (f"    location = /{answer.name} {{\n"
            f"        error_page {answer.status} /_bodies/{answer.name}.json;\n"
            f"        return {answer.status};\n"
            f"    }}\n"
            f"    location = /_bodies/{answer.name}.json {{ internal; alias {path}; {labelled} }}\n")


def nginx_temp_paths(directory: Path) -> str:
    """The http block's temporary paths, inside `directory`: nginx's defaults are system folders."""
    return "".join(f"    {name}_temp_path {directory / ('tmp_' + name)};\n"
                   for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def write_config(directory: Path, port: int, workers: int, answers: list[StaticAnswer]) -> Path:
    """nginx.conf with everything (pid, logs, temp paths) inside `directory`."""
    bodies = directory / "_bodies"
    bodies.mkdir(parents=True, exist_ok=True)
    for answer in answers:
        (bodies / f"{answer.name}.json").write_bytes(answer.body)
        if answer.gzipped is not None:
            (bodies / f"{answer.name}.json.gz").write_bytes(answer.gzipped)
    # nginx's workers run as `nobody` when started by root: let them read the files (the directories above
    # must let them through: run.py makes its work directory 0711).
    for path in (directory, bodies, *bodies.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
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
{nginx_temp_paths(directory)}    server {{
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
        if response.headers.get("content-type") != answer.content_type:
            raise RuntimeError(f"nginx answers {answer.name} as {response.headers.get('content-type')}, not "
                               f"{answer.content_type}")
        if answer.gzipped is not None and WireAnswer.fetch(f"{base}/{answer.name}",
                                                           {"Accept-Encoding": "gzip"}).body != answer.gzipped:
            raise RuntimeError(f"nginx does not send modeldex's compressed bytes for {answer.name}")


def nginx_etag(base: str, name: str) -> str:
    """nginx's own ETag for a file, for its If-None-Match (304) scenario."""
    etag = httpx.get(f"{base}/{name}").headers.get("etag")
    if not etag:
        raise RuntimeError(f"nginx sent no ETag for {name}")
    return etag



# Headers granian adds to every answer itself; the rest of the header list is the application's.
SERVER_HEADERS = ("server", "content-length", "date")


@dataclass(frozen=True)
class WireAnswer:
    """An answer as the application handed it to granian: status, header list (in order) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def of(cls, response: httpx.Response, body: bytes | None = None) -> WireAnswer:
        raw = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in response.headers.raw]
        headers = tuple((name, value) for name, value in raw if name.lower() not in SERVER_HEADERS)
        return cls(response.status_code, headers, response.content if body is None else body)

    @classmethod
    def fetch(cls, url: str, headers: dict[str, str]) -> WireAnswer:
        """The answer as it crossed the wire: a compressed body stays compressed."""
        with httpx.Client(timeout=30) as client, client.stream("GET", url, headers=headers) as response:
            body = b"".join(response.iter_raw())
            return cls.of(response, body)


def start_ceiling(directory: Path, workers: int, answer: WireAnswer, request_headers: dict[str, str]
                  ) -> tuple[Server, str]:
    """granian, started as `modeldex serve` starts it, with `workers` workers and an app that answers
    nothing but `answer` (ceiling.py); checked to answer exactly that before it is measured."""
    directory.mkdir(parents=True, exist_ok=True)
    answer_file = directory / "answer.json"
    answer_file.write_text(json.dumps([answer.status, [list(pair) for pair in answer.headers],
                                       answer.body.decode("latin-1")]))
    port = free_port()
    here = Path(__file__).resolve().parent
    argv = [sys.executable, str(here / "ceiling.py"), str(answer_file), HOST, str(port), str(workers)]
    server = Server(f"granian ceiling --workers {workers}", argv, directory / "ceiling.log",
                    env={**os.environ, "PYTHONPATH": str(here)}, cwd=here)
    base = f"http://{HOST}:{port}"
    server.wait_ready(lambda: http_status(f"{base}/") == answer.status, timeout=30)
    served = WireAnswer.fetch(f"{base}/", request_headers)
    if served != answer:
        raise RuntimeError(f"the ceiling answers {served.status} {served.headers} {served.body[:80]!r}, not "
                           f"modeldex's {answer.status} {answer.headers} {answer.body[:80]!r}")
    return server, base
