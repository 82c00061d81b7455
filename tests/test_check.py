"""`modeldex check URL` against real servers: modeldex passes every check; LiteLLM's proxy shows its known
failures (ids with '/' that list but 404, FastAPI's {"detail": ...}); nginx serving the list as a static
file fails what a file cannot do (401s, 404s in the envelope)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modeldex.conformance.checks import envelope_problem
from modeldex.conformance.probe import api_base, model_path

from .conftest import Server, create_key, run_cli
from .debian_packages import ensure_package
from .litellm_proxy import LiteLLMProxy
from .postgres import free_port

pytestmark = pytest.mark.peer

MASTER_KEY = "sk-litellm-check-5c1e9b"
SLASHED = "meta-llama/Llama-3.1-8B-Instruct"


def checked(url: str, *args: str, db_url: str = "sqlite:////nonexistent/unused.db") -> tuple[int, dict]:
    result = run_cli(db_url, "check", url, "--json", *args, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def statuses(report: dict) -> dict[str, str]:
    return {check["name"]: check["status"] for check in report["checks"]}


@pytest.fixture(scope="module")
def litellm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiteLLMProxy]:
    params = {"api_key": "dummy", "api_base": "http://127.0.0.1:9/v1", "mock_response": "OK"}
    proxy = LiteLLMProxy(tmp_path_factory.mktemp("litellm-check"), free_port(), [
        {"model_name": "mock-chat", "litellm_params": {"model": "openai/mock-chat", **params}},
        {"model_name": SLASHED, "litellm_params": {"model": "openai/llama", **params}},
    ], MASTER_KEY)
    proxy.start()
    yield proxy
    proxy.stop()


def test_modeldex_passes_every_check(litellm: LiteLLMProxy, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/catalog.db"
    admin = create_key(db_url, "checker", "admin")
    run_cli(db_url, "upstreams", "add", "litellm", "--base-url", litellm.base_url, "--api-key-env",
            "CHECK_LITELLM_KEY", "--routing-only")
    run_cli(db_url, "models", "add", SLASHED)
    run_cli(db_url, "models", "add", "ft:gpt-4o:acme::x1@2")
    run_cli(db_url, "models", "add", "team/chat")
    run_cli(db_url, "routes", "add", "team/chat", "litellm", "--upstream-model", "mock-chat")
    os.environ["CHECK_LITELLM_KEY"] = MASTER_KEY
    try:
        server = Server(db_url, tmp_path / "server.log", "--rate-limit", "10000/m")
    finally:
        del os.environ["CHECK_LITELLM_KEY"]
    try:
        code, report = checked(server.base_url, "--api-key", admin, "--model", "team/chat", "--writes")
    finally:
        server.stop()
    assert {name: status for name, status in statuses(report).items() if status != "pass"} == {}, report
    assert code == 0 and report["passed"] is True
    assert len(report["checks"]) >= 16


def test_litellm_shows_its_known_failures(litellm: LiteLLMProxy) -> None:
    code, report = checked(litellm.base_url, "--api-key", MASTER_KEY, "--model", "mock-chat")
    seen = statuses(report)
    assert code == 1 and report["passed"] is False
    assert seen["every listed id retrieves"] == "fail"  # LiteLLM #37271: ids with '/' list but 404
    failure = next(c for c in report["checks"] if c["name"] == "every listed id retrieves")
    assert SLASHED in failure["got"] and "LiteLLM #37271" in failure["why"]
    assert seen["unknown route in the envelope"] == "fail"  # FastAPI's {"detail": "Not Found"}
    assert seen["404 for an unknown model"] == "fail"
    assert seen["list shape"] == seen["chat completion"] == seen["chat completion, streamed"] == "pass"
    assert seen["delete a model (--writes)"] == "skip"


def _nginx() -> str:
    # Debian's package, as bench/run.sh installs it; its binary is in /usr/sbin, which a PATH may lack.
    return shutil.which("nginx") or str(ensure_package(Path("/usr/sbin/nginx"), "nginx"))


@pytest.fixture
def static_nginx(tmp_path: Path) -> Iterator[str]:
    site = tmp_path / "site"
    (site / "v1").mkdir(parents=True)
    (site / "v1" / "models").write_text(json.dumps({"object": "list", "data": [
        {"id": "static-model", "object": "model", "created": 1700000000, "owned_by": "files"}]}))
    port = free_port()
    conf = tmp_path / "nginx.conf"
    temp = "".join(f"    {name}_temp_path {tmp_path}/tmp_{name};\n"
                   for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # Started by root, nginx's workers would run as nobody, who cannot enter pytest's private folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(f"""daemon off;
{user}pid {tmp_path}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}    server {{
        listen 127.0.0.1:{port};
        root {site};
        default_type application/json;
    }}
}}
""")
    process = subprocess.Popen([_nginx(), "-c", str(conf), "-p", str(tmp_path), "-e", "stderr"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/v1/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield base
    process.terminate()
    process.wait(timeout=10)


def test_nginx_serving_a_static_list_fails_what_a_file_cannot_do(static_nginx: str) -> None:
    code, report = checked(static_nginx, "--api-key", "sk-anything")
    seen = statuses(report)
    assert code == 1
    assert seen["list shape"] == "pass", report  # a file can hold the right shape ...
    assert seen["every listed id retrieves"] == "fail"  # ... but not answer for each model in it
    assert seen["401 without a key"] == seen["401 with a wrong key"] == "fail"
    assert seen["404 for an unknown model"] == seen["unknown route in the envelope"] == "fail"
    assert seen["x-request-id"] == "warn"
    assert seen["chat completion"] == "skip"  # nginx has no such route: not an inference server


def test_the_checker_refuses_what_is_not_a_url() -> None:
    result = run_cli("sqlite:////nonexistent/unused.db", "check", "localhost:8000", check=False)
    assert result.returncode == 2 and "http://" in result.stderr and "Traceback" not in result.stderr


def test_base_urls_and_paths_as_users_type_them() -> None:
    assert api_base("http://h:1") == api_base("http://h:1/") == api_base("http://h:1/v1/") == "http://h:1/v1"
    assert model_path("a/b:c@d") == "/models/a%2Fb%3Ac%40d" and model_path("a/b", encoded=False) == "/models/a/b"


@pytest.mark.parametrize(("status", "headers", "body", "problem"), [
    (404, {"content-type": "application/json"}, b'{"detail":"Not Found"}', "no OpenAI error envelope"),
    (404, {"content-type": "text/html"}, b"<h1>404</h1>", "not JSON"),
    (500, {"content-type": "application/json"}, b"{}", "status 500"),
    (404, {"content-type": "application/json"}, b'{"error":{"message":"x","type":"t","param":null}}', "lacks code"),
    (404, {"content-type": "application/json"}, b'{"error":{"message":"x","type":"t","param":null,"code":null}}',
     None),
])
def test_the_error_envelope_as_the_sdks_read_it(status: int, headers: dict, body: bytes, problem: str | None) -> None:
    response = httpx.Response(status, headers=headers, content=body)
    found = envelope_problem(response, 404)
    assert found is None if problem is None else problem in (found or "")
