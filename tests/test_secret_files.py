"""Secrets off the command line, where every user of the machine can read them (ps, /proc/PID/cmdline): the
CLI's admin key and the server's metrics token come from a file (a mounted Kubernetes or Docker secret,
ending in a line break) or the environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import cli_env, create_key, run_cli


def command_lines(pid: int) -> str:
    """The command lines of the process and its children, as ps shows them to anyone."""
    pids = [pid, *(int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    return " ".join(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode() for p in pids)


def test_the_cli_reads_the_admin_key_from_a_file(sqlite_url: str, start_server, tmp_path: Path) -> None:
    admin = create_key(sqlite_url, "ops", "admin")
    server = start_server(sqlite_url)
    secret_file = tmp_path / "admin-key"
    secret_file.write_text(admin + "\n")  # as a secret made from a file ends
    secret_file.chmod(0o600)
    listed = run_cli(sqlite_url, "models", "list", "--url", server.base_url, "--api-key-file", str(secret_file))
    assert "MiniMax-M3" in listed.stdout
    from_env = run_cli(sqlite_url, "models", "list", "--url", server.base_url,
                       env=cli_env(sqlite_url, MODELDEX_API_KEY_FILE=str(secret_file)))
    assert "MiniMax-M3" in from_env.stdout
    assert server.get("/v1/admin/changes", admin).status_code == 200

    both = run_cli(sqlite_url, "models", "list", "--url", server.base_url, "--api-key", admin,
                   "--api-key-file", str(secret_file), check=False)
    assert both.returncode == 2 and "alternatives" in both.stderr
    for content, problem in (("", "must hold one line"), ("one\ntwo\n", "must hold one line")):
        secret_file.write_text(content)
        bad = run_cli(sqlite_url, "models", "list", "--url", server.base_url, "--api-key-file", str(secret_file),
                      check=False)
        assert bad.returncode == 2 and problem in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    missing = run_cli(sqlite_url, "models", "list", "--url", server.base_url, "--api-key-file",
                      str(tmp_path / "nope"), check=False)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    for result in (listed, from_env, both):
        assert admin not in result.stdout + result.stderr


@pytest.mark.cli_process  # a new interpreter: its command line is what ps shows (a fork has the fork server's)
def test_serve_reads_the_metrics_token_from_a_file(sqlite_url: str, start_server, tmp_path: Path) -> None:
    token = "metrics-" + os.urandom(12).hex()
    token_file = tmp_path / "metrics-token"
    token_file.write_text(token + "\r\n")
    server = start_server(sqlite_url, "--metrics-token-file", str(token_file), "--workers", "2")
    assert server.get("/metrics", token).status_code == 200
    assert server.get("/metrics", token + "x").status_code == 401
    assert token not in command_lines(server.process.pid)
    assert token not in server.log()


def test_serve_refuses_a_token_twice_or_an_unreadable_file(sqlite_url: str, tmp_path: Path) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text("t0ken\n")
    both = run_cli(sqlite_url, "serve", "--port", "0", "--metrics-token", "t0ken", "--metrics-token-file",
                   str(token_file), check=False)
    assert both.returncode == 2 and "alternatives" in both.stderr
    missing = run_cli(sqlite_url, "serve", "--port", "0", "--metrics-token-file", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr
