"""A new user's first hour (issue 14): a port in use, a mistyped database path, a prune that deletes, errors
that are one line."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from .conftest import cli_env, create_key, execute_sql, free_port, read_by_the_server, run_cli, wait_until

# CLI runs are forked from tests/forkserver.py, as in tests/test_cli.py (which also runs the installed
# script in new processes); `serve` always starts a new one.


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The run failed with `code` and said why in one line, without a traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- two servers on one port ---------------------------------------------------------------------------


def test_a_second_server_on_a_port_in_use_is_refused_unless_asked_to_share(sqlite_url: str, tmp_path: Path,
                                                                          start_server) -> None:
    first = start_server(sqlite_url)
    other_db = f"sqlite:///{tmp_path}/other.db"
    run_cli(other_db, "models", "list")
    refused = run_cli(other_db, "serve", "--port", str(first.port), check=False)
    line = one_line_error(refused)
    assert f"port {first.port} on 127.0.0.1 is in use" in line and "--reuse-port" in line
    assert run_cli(other_db, "keys", "list").stdout.splitlines()[1:] == [], "a refused server made a first key"

    # Asked to share, it starts (and the first still answers).
    log = tmp_path / "shared.log"
    with open(log, "wb") as output:
        shared = subprocess.Popen([sys.executable, "-m", "modeldex", "serve", "--port", str(first.port), "--reuse-port"],
                                  env=cli_env(other_db), stdout=output, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_until(lambda: "Started worker-1" in log.read_text() or shared.poll() is not None, 30) is not None
        assert shared.poll() is None, log.read_text()
        assert first.get("/healthz").status_code == 200
    finally:
        shared.send_signal(signal.SIGTERM)
        try:
            shared.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(shared.pid, signal.SIGKILL)
            shared.wait()


def test_serve_refuses_what_it_cannot_listen_with_in_one_line_and_changes_nothing(tmp_path: Path) -> None:
    """TLS files that do not make a pair, trusted proxies that are no addresses, a metrics port that is the API's,
    CORS origins no browser sends, an address no server could share: one line before anything is created or
    "listening" said, never a traceback from the server or a crash loop of its workers."""
    url = f"sqlite:///{tmp_path}/catalog.db"
    cert, key, other_key, encrypted = (tmp_path / name for name in ("cert.pem", "key.pem", "other.pem", "enc.pem"))
    for certificate, private_key in ((cert, key), (tmp_path / "other-cert.pem", other_key)):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=x",
                        "-keyout", str(private_key), "-out", str(certificate)], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
                   check=True, capture_output=True)
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    port = str(free_port())
    refusals = {
        ("--ssl-certfile", str(cert), "--ssl-keyfile", str(other_key)):
            f"Error: --ssl-keyfile {other_key} is not the key of the certificate in --ssl-certfile {cert}",
        ("--ssl-certfile", str(tmp_path / "garbage.pem"), "--ssl-keyfile", str(key)):
            f"Error: --ssl-certfile {tmp_path}/garbage.pem holds no PEM certificate",
        ("--ssl-certfile", str(key), "--ssl-keyfile", str(cert)):
            f"Error: --ssl-certfile {key} holds no PEM certificate",
        ("--ssl-certfile", str(cert), "--ssl-keyfile", str(tmp_path / "garbage.pem")):
            f"Error: --ssl-keyfile {tmp_path}/garbage.pem holds no PEM private key",
        ("--ssl-certfile", str(cert), "--ssl-keyfile", str(encrypted)):
            f"Error: --ssl-keyfile {encrypted} is encrypted: give an unencrypted key",
    }
    for args, expected in refusals.items():
        assert one_line_error(run_cli(url, "serve", "--port", port, *args, check=False)) == expected, args
    usage = {
        ("--forwarded-allow-ips", "10.0.0.0/8,proxy.internal"): "Error: Invalid value for '--forwarded-allow-ips': "
            "'proxy.internal' does not appear to be an IPv4 or IPv6 network (give addresses or CIDR ranges, "
            "comma-separated, or '*')",
        ("--metrics-port", port): "Error: --metrics-port must differ from --port: the API listens there",
        # An origin is compared as the text browsers send: these were accepted and never matched.
        ("--cors-origin", "https://ui.example/"): "Error: Invalid value for '--cors-origin': 'https://ui.example/' "
            "would never match: browsers send it as 'https://ui.example' (no path, lower case, no default port)",
        ("--cors-origin", "https://ok.example, HTTPS://UI.example:443"): "Error: Invalid value for "
            "'--cors-origin': 'HTTPS://UI.example:443' would never match: browsers send it as 'https://ui.example' "
            "(no path, lower case, no default port)",
        ("--cors-origin", "ui.example"): "Error: Invalid value for '--cors-origin': 'ui.example' is not an origin: "
            "give scheme://host[:port], as in 'https://ui.example', or '*'",
    }
    for args, expected in usage.items():
        result = run_cli(url, "serve", "--port", port, *args, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.splitlines()[-1] == expected
    assert not (tmp_path / "catalog.db").exists(), "a refused server created its catalog"

    # --reuse-port shares a port with servers that allow it, nothing else; an address that is not this
    # machine's is refused with it too.
    run_cli(url, "models", "list")
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        taken = plain.getsockname()[1]
        line = one_line_error(run_cli(url, "serve", "--port", str(taken), "--reuse-port", check=False))
        assert line == (f"Error: port {taken} on 127.0.0.1 is in use by a server that does not share it: "
                        "--reuse-port shares a port only with servers that allow it")
    line = one_line_error(run_cli(url, "serve", "--host", "192.0.2.1", "--port", port, "--reuse-port", check=False))
    assert line == f"Error: cannot listen on 192.0.2.1:{port}: Cannot assign requested address"
    assert run_cli(url, "keys", "list").stdout.splitlines()[1:] == [], "a refused server made a first key"


# --- the database's path ------------------------------------------------------------------------------


def test_a_missing_folder_is_an_error_not_a_new_catalog(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nonexistent/dir/x.db"
    for command in (("models", "list"), ("keys", "create", "k"), ("db", "upgrade"), ("serve", "--port", "1")):
        line = one_line_error(run_cli(url, *command, check=False))
        expected = (f"Error: no folder {tmp_path}/nonexistent/dir for the database: create it first "
                    "(modeldex creates folders only for its default location)")
        assert line == expected, command
    assert not (tmp_path / "nonexistent").exists()


def test_a_database_path_that_is_a_folder_is_named(tmp_path: Path) -> None:
    """SQLite's "unable to open database file" said neither which file nor why: the error names the path."""
    (tmp_path / "catalog.db").mkdir()
    line = one_line_error(run_cli(f"sqlite:///{tmp_path}/catalog.db", "models", "list", check=False))
    assert line == f"Error: cannot open the database {tmp_path}/catalog.db: unable to open database file"


def test_a_new_catalog_is_announced_with_its_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    relative = "sqlite:///data/catalog.db"
    env = {**cli_env(relative)}
    created = subprocess.run([sys.executable, "-m", "modeldex", "models", "add", "here"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    assert f"modeldex: created a new catalog at {tmp_path}/data/catalog.db (9 models)\n" in created.stderr
    again = subprocess.run([sys.executable, "-m", "modeldex", "models", "list"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert "here" in again.stdout and "created" not in again.stderr
    # From another folder the same relative URL is another file: said, not silent.
    (tmp_path / "elsewhere" / "data").mkdir(parents=True)
    other = subprocess.run([sys.executable, "-m", "modeldex", "models", "list"], env=env,
                           cwd=tmp_path / "elsewhere", capture_output=True, text=True, timeout=60)
    assert f"created a new catalog at {tmp_path}/elsewhere/data/catalog.db" in other.stderr


def test_the_default_location_gets_its_folders(tmp_path: Path) -> None:
    env = cli_env("unused", XDG_DATA_HOME=str(tmp_path / "xdg"))
    del env["MODELDEX_DATABASE_URL"]
    result = run_cli("unused", "models", "list", env=env)
    assert f"created a new catalog at {tmp_path}/xdg/modeldex/catalog.db (9 models)" in result.stderr


def test_unsupported_and_malformed_database_urls_are_one_line(tmp_path: Path) -> None:
    mysql = one_line_error(run_cli("mysql://user:secret@db.example/catalog", "models", "list", check=False))
    assert "unsupported database 'mysql'" in mysql and "postgresql://" in mysql and "secret" not in mysql
    garbage = one_line_error(run_cli("not a url", "models", "list", check=False))
    assert "not a database URL" in garbage
    missing = one_line_error(run_cli(f"sqlite:///{tmp_path}/absent.db", "db", "current", check=False))
    assert missing == f"Error: no database at {tmp_path}/absent.db"
    assert not (tmp_path / "absent.db").exists()
    # A port that is no number: SQLAlchemy's parser raised ValueError, a traceback from every command.
    bad_port = "postgresql://someone:hunter2@db.internal:5432x/catalog"
    for command in (("models", "list"), ("db", "current"), ("db", "upgrade"), ("serve", "--port", "1")):
        line = one_line_error(run_cli(bad_port, *command, check=False))
        assert line == ("Error: not a database URL; expected sqlite:///path/catalog.db or "
                        "postgresql://user@host/dbname"), command
    line = one_line_error(run_cli(bad_port, "db", "backup", str(tmp_path / "copy.db"), check=False))
    assert "hunter2" not in line and "someone:***@db.internal:5432x" in line and "pg_dump" in line


# --- catalog apply --prune ----------------------------------------------------------------------------

KEEP_TWO = "models:\n  - id: MiniMax-M3\n    owned_by: minimax\n  - id: MiniMax-M2\n    owned_by: minimax\n"


def on_a_terminal(db_url: str, args: list[str], answer: str, before_answering: Callable[[], object] | None = None
                  ) -> tuple[int, str]:
    """`modeldex ARGS` with a terminal for stdin and output (a pty), typing `answer` (after calling
    `before_answering`, if given): its status and output."""
    import pty
    import select

    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "modeldex", *args], env=cli_env(db_url), stdin=terminal,
                               stdout=terminal, stderr=terminal, close_fds=True)
    os.close(terminal)
    output = b""
    typed = False
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 30)
            assert ready, f"no output within 30 s: {output!r}"
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not typed and b"[y/N]" in output:
                if before_answering is not None:
                    before_answering()
                os.write(controller, answer.encode() + b"\n")
                typed = True
        return process.wait(timeout=30), output.decode(errors="replace").replace("\r\n", "\n")
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()


def test_a_prune_that_removes_is_asked_on_a_terminal_and_refused_without_one(sqlite_url: str,
                                                                              tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(KEEP_TWO)
    run_cli(sqlite_url, "models", "list")
    before = run_cli(sqlite_url, "catalog", "export").stdout

    refused = one_line_error(run_cli(sqlite_url, "catalog", "apply", str(path), "--prune", check=False))
    assert refused == ("Error: --prune would remove 7 entries (model MiniMax-M2.1, model MiniMax-M2.1-highspeed, "
                       "model MiniMax-M2.5, and 4 more); confirm with --yes (see all with --dry-run)")
    assert run_cli(sqlite_url, "catalog", "export").stdout == before

    status, output = on_a_terminal(sqlite_url, ["catalog", "apply", str(path), "--prune"], "n")
    assert status == 1 and "- model MiniMax-M3.1-Flash-Preview\n" in output and "remove these 7 entries? [y/N]" in output
    assert run_cli(sqlite_url, "catalog", "export").stdout == before

    # Another operator adds a model while the question is on the screen: the prune would now remove it
    # too, which was not shown, so nothing is applied.
    status, output = on_a_terminal(sqlite_url, ["catalog", "apply", str(path), "--prune"], "y",
                                   lambda: run_cli(sqlite_url, "models", "add", "late/model", "--owned-by", "ops"))
    assert status == 1 and "the catalog changed since the preview" in output, output
    assert "late/model" in run_cli(sqlite_url, "models", "list").stdout
    run_cli(sqlite_url, "models", "remove", "late/model")

    status, output = on_a_terminal(sqlite_url, ["catalog", "apply", str(path), "--prune"], "y")
    assert status == 0 and "applied 7 change(s)" in output, output
    assert [row.split()[0] for row in run_cli(sqlite_url, "models", "list").stdout.splitlines()[1:]] == [
        "MiniMax-M3", "MiniMax-M2"]


def test_a_prune_that_empties_the_catalog_needs_force(sqlite_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    run_cli(sqlite_url, "models", "list")
    for extra in ((), ("--yes",)):
        refused = one_line_error(run_cli(sqlite_url, "catalog", "apply", str(empty), "--prune", *extra, check=False))
        assert refused == ("Error: refusing a prune that leaves the catalog without models (9 removal(s)); "
                           "pass --force if that is what you want")
    assert len(run_cli(sqlite_url, "models", "list").stdout.splitlines()) == 10
    forced = run_cli(sqlite_url, "catalog", "apply", str(empty), "--prune", "--yes", "--force")
    assert "applied 9 change(s)" in forced.stderr
    assert run_cli(sqlite_url, "models", "list").stdout.splitlines() == ["ID  OWNED_BY  CREATED"]
    # Nothing to remove: nothing to ask.
    assert "nothing to change" in run_cli(sqlite_url, "catalog", "apply", str(empty), "--prune").stderr


# --- every error one line -----------------------------------------------------------------------------


def test_file_errors_are_one_line_naming_the_file(sqlite_url: str, tmp_path: Path) -> None:
    run_cli(sqlite_url, "models", "list")
    before = run_cli(sqlite_url, "catalog", "export").stdout
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("models:\n  - id: caf\u00e9\n".encode("latin-1"))
    assert one_line_error(run_cli(sqlite_url, "catalog", "apply", str(latin1), check=False)) == \
        f"Error: {latin1}: not UTF-8 text (byte 20 is 0xe9); a catalog file is YAML in UTF-8"
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("models:\n  - id: a\n    owned_by: [x\n")
    assert one_line_error(run_cli(sqlite_url, "catalog", "apply", str(malformed), check=False)) == \
        f"Error: {malformed}: not valid YAML at line 4, column 1: did not find expected ',' or ']'"
    assert one_line_error(run_cli(sqlite_url, "catalog", "export", "-o", f"{tmp_path}/nonexistent/x.yaml",
                                  check=False)) == f"Error: cannot write {tmp_path}/nonexistent/x.yaml: No such file or directory"
    assert run_cli(sqlite_url, "catalog", "export").stdout == before


def test_an_export_that_cannot_be_written_whole_leaves_the_last_one(sqlite_url: str, tmp_path: Path) -> None:
    """`catalog export -o` over a backup: a write that fails midway (here a file size limit of 64 KiB, as a
    full disk) used to leave the file truncated, which `apply --prune` would take for the catalog."""
    import resource

    many = tmp_path / "many.yaml"
    many.write_text("models:\n" + "".join(f"  - id: model-{n:04}\n    description: {'x' * 60}\n" for n in range(1500)))
    run_cli(sqlite_url, "catalog", "apply", str(many))
    backup = tmp_path / "backup.yaml"
    run_cli(sqlite_url, "catalog", "export", "-o", str(backup))
    good = backup.read_text()
    assert len(good) > 65536 and "model-1499" in good
    backup.chmod(0o640)
    run_cli(sqlite_url, "models", "add", "one-more")

    def small_files() -> None:  # the database's own files (and SQLite's 32 KiB -shm) stay below it
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))  # Python ignores SIGXFSZ: writes fail (EFBIG)

    failed = subprocess.run([sys.executable, "-m", "modeldex", "catalog", "export", "-o", str(backup)],
                            env=cli_env(sqlite_url), capture_output=True, text=True, timeout=60,
                            preexec_fn=small_files)
    assert failed.returncode == 1 and failed.stderr == f"Error: cannot write {backup}: File too large\n"
    assert backup.read_text() == good and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    run_cli(sqlite_url, "catalog", "export", "-o", str(backup))  # and a write that can finish replaces it
    assert "one-more" in backup.read_text() and backup.stat().st_mode & 0o777 == 0o640


def test_the_database_url_goes_before_the_command_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/before.db"
    env = cli_env("unused")
    del env["MODELDEX_DATABASE_URL"]
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    run_cli("unused", "--database-url", url, "models", "add", "placed-first", env=env)
    assert "placed-first" in run_cli(url, "models", "list").stdout
    assert not (tmp_path / "xdg").exists()
    # The command's own flag wins.
    other = f"sqlite:///{tmp_path}/other.db"
    run_cli("unused", "--database-url", url, "models", "add", "in-other", "--database-url", other, env=env)
    assert "in-other" in run_cli(other, "models", "list").stdout
    assert "in-other" not in run_cli(url, "models", "list").stdout


def test_models_show_follows_an_alias_and_limits_say_unlimited(sqlite_url: str) -> None:
    run_cli(sqlite_url, "aliases", "add", "latest", "MiniMax-M3")
    shown = run_cli(sqlite_url, "models", "show", "latest")
    assert shown.stderr == "latest is an alias of MiniMax-M3:\n"
    assert json.loads(shown.stdout)["id"] == "MiniMax-M3"
    assert one_line_error(run_cli(sqlite_url, "models", "show", "ghost", check=False)) == \
        "Error: model 'ghost' does not exist"
    refused = run_cli(sqlite_url, "serve", "--rate-limit", "lots", check=False)
    assert refused.returncode == 2 and "(or 'unlimited')" in refused.stderr and "'off'" not in refused.stderr
    assert "Default: unlimited" in " ".join(run_cli(sqlite_url, "serve", "--help").stdout.split())


def test_an_unreachable_upstream_is_added_with_a_warning(sqlite_url: str) -> None:
    from .postgres import free_port

    port = free_port()  # nothing listens there
    added = run_cli(sqlite_url, "upstreams", "add", "away", "--base-url", f"http://127.0.0.1:{port}/v1")
    assert f"warning: http://127.0.0.1:{port}/v1 is not reachable from here (Connection refused); added anyway" \
        in added.stderr
    assert "away" in run_cli(sqlite_url, "upstreams", "list").stdout


def test_the_sdk_base_url_works_for_the_cli_and_metrics_say_which_key(sqlite_url: str, start_server) -> None:
    admin = create_key(sqlite_url, "admin", "admin")
    server = start_server(sqlite_url)
    listed = run_cli("sqlite:///unused.db", "models", "list", "--url", server.base_url + "/v1", "--api-key", admin)
    assert "MiniMax-M3" in listed.stdout
    listed = run_cli("sqlite:///unused.db", "--url", server.base_url + "/v1/", "models", "list", "--api-key", admin)
    assert "MiniMax-M3" in listed.stdout
    assert one_line_error(run_cli("sqlite:///unused.db", "models", "list", "--url", "localhost:8000",
                                  "--api-key", admin, check=False)) == \
        "Error: --url must be a server's address, like http://127.0.0.1:8000"
    answer = server.get("/metrics")
    assert answer.status_code == 401
    message = answer.json()["error"]["message"]
    assert "admin key" in message and "--scope admin" in message and "--metrics-token-file" in message
    assert server.get("/metrics", admin).status_code == 200


def test_url_never_sends_a_name_to_another_resource(sqlite_url: str, start_server) -> None:
    """With --url a name went into the admin API's path as it was: `keys revoke ../models/victim` removed the
    model victim (and said "revoked key"), `models remove x/../victim` too, and `keys explain 'a?b' M` ended
    in a traceback. Locally each is refused; through a server it must be too, and change nothing."""
    admin = create_key(sqlite_url, "admin", "admin")
    run_cli(sqlite_url, "models", "add", "victim")
    run_cli(sqlite_url, "aliases", "add", "pointer", "victim")
    server = start_server(sqlite_url)
    env = {**cli_env(sqlite_url), "MODELDEX_URL": server.base_url, "MODELDEX_API_KEY": admin}
    del env["MODELDEX_DATABASE_URL"]
    for args in (("keys", "revoke", "../models/victim"), ("keys", "update", "../aliases/pointer", "--scope", "read"),
                 ("keys", "explain", "..", "victim"), ("models", "remove", "x/../victim"),
                 ("models", "show", "x/../victim"), ("aliases", "remove", "x/../pointer"),
                 ("models", "update", "./victim", "--name", "V"), ("upstreams", "sync-now", "..")):
        line = one_line_error(run_cli(sqlite_url, *args, env=env, check=False))
        assert "does not exist: no name or id has an empty, '.' or '..' path segment" in line, (args, line)
    line = one_line_error(run_cli(sqlite_url, "keys", "explain", "admin?x=1", "victim", env=env, check=False))
    assert line == "Error: no active key named 'admin?x=1' (HTTP 404)"
    assert "victim" in run_cli(sqlite_url, "models", "list", env=env).stdout
    assert "pointer" in run_cli(sqlite_url, "aliases", "list", env=env).stdout
    assert run_cli(sqlite_url, "models", "show", "pointer", env=env).stderr == "pointer is an alias of victim:\n"


def test_url_at_a_server_that_is_not_modeldex_is_one_line(sqlite_url: str, tmp_path: Path) -> None:
    """--url at another web server (a typo'd port, a proxy's page): its HTML answer was a JSONDecodeError
    traceback, or, for an error status, 200 characters of its page."""
    import http.server

    class NotModeldex(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path.startswith("/v1/admin/models") else 404
            body = b"<!DOCTYPE html><html><body>It works!</body></html>"
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotModeldex)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for args, status in ((("models", "list"), 200), (("aliases", "list"), 404), (("keys", "list"), 404)):
            line = one_line_error(run_cli(sqlite_url, *args, "--url", base, "--api-key", "sk-mdx-x", check=False))
            assert line.endswith(f"answered HTTP {status} but not as modeldex's admin API does: is --url the "
                                 "address of a modeldex server?"), line
            assert "<html>" not in line
    finally:
        server.shutdown()
        server.server_close()


# --- shutdown -----------------------------------------------------------------------------------------

DRAIN_RUNS = 6


def _post_model(port: int, key: str, model_id: str, sent: threading.Event, answers: list[bytes],
                client_ports: list[int]) -> None:
    """POST a model on a socket of its own (its port in `client_ports`), set `sent` once the whole request is
    on its way, then read the answer until the server closes."""
    body = json.dumps({"id": model_id, "owned_by": "test"}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        client_ports.append(conn.getsockname()[1])
        conn.sendall(b"POST /v1/admin/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     b"Authorization: Bearer " + key.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        sent.set()
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        answers.append(answer)


def test_sigterm_never_cuts_an_in_flight_request(sqlite_url: str, start_server) -> None:
    """The drain, again and again: a write held in flight (waiting for the database's write lock) while the
    server is told to stop. It must complete, the server exit 0, and no worker be killed. A worker killed
    "after it refused to gracefully stop" 10–30 ms after the stop had in truth already exited (granian read a
    reaped worker as alive: cli/supervisor.py); with two workers a run had two chances to show it."""
    admin = create_key(sqlite_url, "admin", "admin")
    database = sqlite_url.removeprefix("sqlite:///")
    for run in range(DRAIN_RUNS):
        server = start_server(sqlite_url, "--workers", "2")
        blocker = sqlite3.connect(database, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        answers: list[bytes] = []
        client_ports: list[int] = []
        sent = threading.Event()
        request = threading.Thread(target=_post_model, args=(server.port, admin, f"drain-{run}", sent, answers,
                                                             client_ports))
        request.start()
        assert sent.wait(10), f"run {run}: the request was not sent"
        # Sent is not enough: until the server has accepted the connection and read the request, the stop would
        # come before it (a fixed 0.3 s for that is not always enough on a loaded machine). Wait for that, then a
        # little for the request to reach the database's write lock and wait there.
        read = partial(read_by_the_server, server.port, client_ports[0])
        assert wait_until(read, 10) is not None, f"run {run}: the server did not read the request"
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        alive = server.process.poll() is None
        blocker.execute("ROLLBACK")
        blocker.close()
        request.join(timeout=15)
        assert alive, f"run {run}: the server quit with a request in flight:\n{server.log()}"
        assert answers and answers[0].startswith(b"HTTP/1.1 201 "), (run, answers, server.log())
        assert server.process.wait(timeout=15) == 0, server.log()
        assert "refused to gracefully stop" not in server.log(), f"run {run}:\n{server.log()}"
    listed = run_cli(sqlite_url, "models", "list").stdout
    assert all(f"drain-{n} " in listed for n in range(DRAIN_RUNS))


class _Supervisor:
    """The part of granian's server that `ReapSafeWorkers` wraps: `_spawn_worker`, making granian's own
    worker (a process, and the thread that watches it) as its server does."""

    def _spawn_worker(self, idx: int, target: object, args: tuple) -> object:
        from granian.server.mp import WorkerProcess

        return WorkerProcess(parent=self, idx=idx, target=target, args=args)


def test_a_worker_reaped_by_its_watcher_reads_as_stopped() -> None:
    """The mechanism behind the false "refused to gracefully stop", with granian's own worker class, stopped
    as granian's shutdown stops it (terminate, join with a timeout, is_alive). Without ReapSafeWorkers its
    is_alive answers True now and then (27 of 200 here), the watcher thread having reaped the process."""
    from modeldex.cli.supervisor import ReapSafeWorkers

    class Supervisor(ReapSafeWorkers, _Supervisor):
        pass

    supervisor = Supervisor()
    for n in range(100):
        worker = supervisor._spawn_worker(0, time.sleep, (30,))
        worker.start()
        worker.terminate()
        worker.join(5)
        assert not worker.is_alive(), f"stop {n}: a stopped worker read as alive"


# --- upstream health at a glance ----------------------------------------------------------------------


def test_upstreams_list_shows_a_status_and_only_a_current_error(sqlite_url: str) -> None:
    from .fake_upstream import FakeUpstream

    fake = FakeUpstream()
    try:
        run_cli(sqlite_url, "upstreams", "add", "lab", "--base-url", fake.base_url)
        run_cli(sqlite_url, "upstreams", "add", "router", "--base-url", fake.base_url, "--routing-only")

        def rows() -> dict[str, dict[str, str]]:
            lines = run_cli(sqlite_url, "upstreams", "list").stdout.splitlines()
            header = lines[0]
            starts = [header.index(column) for column in
                      ("NAME", "BASE_URL", "MODELS", "STATUS", "LAST SUCCESS", "LATENCY", "ERROR")]
            table = {}
            for line in lines[1:]:
                cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
                table[cells[0]] = dict(zip(("name", "url", "models", "status", "success", "latency", "error"),
                                           cells, strict=True))
            return table

        assert rows()["lab"]["status"] == "not polled yet" and rows()["router"]["status"] == "routing only"
        run_cli(sqlite_url, "upstreams", "sync-now", "lab")
        assert (rows()["lab"]["status"], rows()["lab"]["models"], rows()["lab"]["error"]) == ("ok", "1", "-")

        fake.mode = "not-a-list"
        assert run_cli(sqlite_url, "upstreams", "sync-now", "lab", check=False).returncode == 1
        failing = rows()["lab"]
        assert re.fullmatch(r"failing since \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", failing["status"]), failing
        assert failing["models"] == "1 (stale)" and failing["error"] != "-"

        fake.mode = "ok"
        run_cli(sqlite_url, "upstreams", "sync-now", "lab")
        recovered = rows()["lab"]
        assert (recovered["status"], recovered["models"], recovered["error"]) == ("ok", "1", "-"), recovered

        # Nobody has polled it for over two intervals (60 s each): no server is running, say so.
        execute_sql(sqlite_url, "UPDATE upstream_health SET last_attempt_at = last_attempt_at - 3600")
        assert re.fullmatch(r"ok, stale: last polled \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", rows()["lab"]["status"])
    finally:
        fake.close()
