"""The `modeldex` command line, run as a user runs it."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from modeldex.store import migrate
from modeldex.store.sql import create_store_engine

from .conftest import SEED_IDS, cli_env, dump_database, execute_sql, run_cli

# Runs are forked from tests/forkserver.py (`python -m modeldex` at top level in a fresh fork: 0.05 s of
# CPU a run against 0.7 s for a new interpreter; this file took 104 s of the suite's 877 s with new ones);
# test_the_installed_command_runs_as_a_user_runs_it runs the installed `modeldex` script in new processes.

HEAD = migrate.head_revision()

KEY_LINE = re.compile(r"sk-mdx-[A-Za-z0-9]{52}\n")


def test_keys_create_prints_the_secret_alone_on_stdout(db_url: str) -> None:
    result = run_cli(db_url, "keys", "create", "ci", "--scope", "admin")
    assert KEY_LINE.fullmatch(result.stdout)
    assert "shown only once" in result.stderr
    assert result.stdout.strip() not in result.stderr


def test_keys_default_to_read_scope_and_list_never_shows_secrets(db_url: str) -> None:
    admin = run_cli(db_url, "keys", "create", "ops", "--scope", "admin").stdout.strip()
    reader = run_cli(db_url, "keys", "create", "dashboard").stdout.strip()
    listing = run_cli(db_url, "keys", "list")
    rows = listing.stdout.splitlines()
    assert rows[0].split() == ["NAME", "SCOPE", "KEY", "SEES", "RATE", "LIMIT", "CREATED", "REVOKED"]
    assert rows[1].split()[:2] == ["ops", "admin"]
    assert rows[2].split()[:2] == ["dashboard", "read"]
    for secret in (admin, reader):
        assert secret not in listing.stdout + listing.stderr
        assert secret[-40:] not in listing.stdout
    dump = dump_database(db_url)
    assert "dashboard" in dump
    assert admin not in dump and reader not in dump


def test_revoke_hides_a_key_unless_asked_and_frees_its_name(db_url: str) -> None:
    run_cli(db_url, "keys", "create", "rotating")
    duplicate = run_cli(db_url, "keys", "create", "rotating", check=False)
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr and duplicate.stdout == ""
    run_cli(db_url, "keys", "revoke", "rotating")
    assert "rotating" not in run_cli(db_url, "keys", "list").stdout
    assert "rotating" in run_cli(db_url, "keys", "list", "--all").stdout
    assert KEY_LINE.fullmatch(run_cli(db_url, "keys", "create", "rotating").stdout)


def test_key_errors_are_one_clear_line(db_url: str) -> None:
    run_cli(db_url, "models", "list")  # the catalog exists (its creation is announced on stderr)
    missing = run_cli(db_url, "keys", "revoke", "ghost", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: no active key named 'ghost'"
    bad_name = run_cli(db_url, "keys", "create", "has space", check=False)
    assert bad_name.returncode == 1 and "invalid name" in bad_name.stderr
    bad_scope = run_cli(db_url, "keys", "create", "x", "--scope", "root", check=False)
    assert bad_scope.returncode == 2 and "'root' is not one of 'read', 'admin'" in bad_scope.stderr
    for result in (missing, bad_name, bad_scope):
        assert "Traceback" not in result.stderr


def test_models_list_add_remove(db_url: str) -> None:
    listing = run_cli(db_url, "models", "list").stdout.splitlines()
    assert listing[0].split() == ["ID", "OWNED_BY", "CREATED"]
    assert [row.split()[0] for row in listing[1:]] == SEED_IDS
    run_cli(db_url, "models", "add", "meta-llama/Llama-3.1-8B-Instruct", "--owned-by", "meta",
            "--created", "1721692800")
    rows = run_cli(db_url, "models", "list").stdout.splitlines()
    assert "meta-llama/Llama-3.1-8B-Instruct  meta      1721692800 (2024-07-23)" in rows
    # `created` past year 9999 is accepted (any timestamp below 2**53, as the API takes it): listed as the
    # number alone, where it once ended the listing with a traceback.
    run_cli(db_url, "models", "add", "far-future", "--created", "253402300800")
    rows = run_cli(db_url, "models", "list").stdout.splitlines()
    assert rows[1].split() == ["far-future", "system", "253402300800"]
    run_cli(db_url, "models", "remove", "meta-llama/Llama-3.1-8B-Instruct")
    run_cli(db_url, "models", "remove", "far-future")
    assert "meta-llama" not in run_cli(db_url, "models", "list").stdout


def test_the_command_line_wins_over_the_environment_in_where_to_work(db_url: str) -> None:
    """MODELDEX_URL set in a shell must not send a write meant for `--database-url` to a server (it did,
    silently), whether the option comes before the command or after it; `--url` and `--database-url` both
    given is refused, wherever each stands."""
    env = {**cli_env(db_url), "MODELDEX_URL": "http://127.0.0.1:9", "MODELDEX_API_KEY": "sk-mdx-unused"}
    run_cli(db_url, "models", "add", "here-not-there", "--database-url", db_url, env=env)
    assert "here-not-there" in run_cli(db_url, "models", "list").stdout
    both = run_cli(db_url, "models", "remove", "here-not-there", "--database-url", db_url, "--url",
                   "http://127.0.0.1:9", check=False)
    assert both.returncode == 2 and "give --url or --database-url, not both" in both.stderr
    # The same before the command (the group's options), where the write still went to the server.
    run_cli(db_url, "--database-url", db_url, "models", "add", "before-too", env=env)
    assert "before-too" in run_cli(db_url, "models", "list").stdout
    for args in (("--url", "http://127.0.0.1:9", "--database-url", db_url, "models", "remove", "before-too"),
                 ("--database-url", db_url, "models", "remove", "before-too", "--url", "http://127.0.0.1:9")):
        both = run_cli(db_url, *args, check=False)
        assert both.returncode == 2 and "give --url or --database-url, not both" in both.stderr, args
    run_cli(db_url, "models", "remove", "here-not-there")
    run_cli(db_url, "models", "remove", "before-too")


def test_models_errors_change_nothing(db_url: str) -> None:
    before = run_cli(db_url, "models", "list").stdout
    cases = {
        ("models", "add", "MiniMax-M2"): "model 'MiniMax-M2' already exists",
        ("models", "add", "bad id"): "invalid id",
        ("models", "add", "a/../b"): "invalid id",
        ("models", "add", "x" * 300): "longer than 256",
        ("models", "add", "ok-id", "--created", "-5"): "invalid created",
        ("models", "remove", "ghost"): "model 'ghost' does not exist",
    }
    for args, message in cases.items():
        result = run_cli(db_url, *args, check=False)
        assert result.returncode == 1, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert run_cli(db_url, "models", "list").stdout == before


def test_database_url_flag_wins_over_the_environment(tmp_path: Path, db_url: str) -> None:
    other = f"sqlite:///{tmp_path}/other.db"
    run_cli(db_url, "models", "add", "only-in-other", "--database-url", other)
    assert "only-in-other" in run_cli(db_url, "models", "list", "--database-url", other).stdout
    assert "only-in-other" not in run_cli(db_url, "models", "list").stdout


def test_default_database_lives_in_the_user_data_directory(tmp_path: Path) -> None:
    env = cli_env("unused", XDG_DATA_HOME=str(tmp_path / "xdg"))
    del env["MODELDEX_DATABASE_URL"]
    run_cli("unused", "models", "add", "found-by-default", env=env)
    assert (tmp_path / "xdg" / "modeldex" / "catalog.db").is_file()
    assert "found-by-default" in run_cli("unused", "models", "list", env=env).stdout


def test_the_seed_is_added_once_not_after_an_operator_removes_it(db_url: str) -> None:
    run_cli(db_url, "models", "remove", "MiniMax-M2")
    assert "MiniMax-M2 " not in run_cli(db_url, "models", "list").stdout + " "
    assert [r.split()[0] for r in run_cli(db_url, "models", "list").stdout.splitlines()[1:]] == [
        i for i in SEED_IDS if i != "MiniMax-M2"]


def test_db_current_and_upgrade(db_url: str) -> None:
    run_cli(db_url, "models", "list")
    assert run_cli(db_url, "db", "current").stdout.strip() == f"{HEAD} (up to date)"
    upgraded = run_cli(db_url, "db", "upgrade")
    assert f"schema {HEAD} (up to date)" in upgraded.stderr


def test_db_upgrade_run_by_several_processes_at_once_migrates_once(empty_db_url: str) -> None:
    """A deploy that runs `db upgrade` before each replica starts: the upgrades wait for each other (they
    read the same old revision and raced: one migrated, the others failed with a database error)."""
    engine = create_store_engine(empty_db_url)
    migrate.upgrade(engine, "0001")
    engine.dispose()
    command = [sys.executable, "-m", "modeldex", "db", "upgrade"]
    upgrades = [subprocess.Popen(command, env=cli_env(empty_db_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(4)]
    results = [(process.wait(60), process.stderr.read()) for process in upgrades if process.stderr is not None]
    assert [code for code, _err in results] == [0] * 4, results
    notes = sorted(err.strip().rsplit(": schema ", 1)[-1] for _code, err in results)
    assert notes == [f"0001 -> {HEAD}"] + [f"{HEAD} (up to date)"] * 3, notes


def test_a_database_of_the_first_schema_is_refused_until_upgraded(empty_db_url: str) -> None:
    db_url = empty_db_url
    engine = create_store_engine(db_url)
    migrate.upgrade(engine, "0001")
    engine.dispose()
    execute_sql(db_url, "INSERT INTO models (id, created, owned_by) VALUES ('legacy/model', 5, 'old')",
                "UPDATE catalog_state SET version = 7, seeded = true")
    assert run_cli(db_url, "db", "current").stdout.strip() == f"0001 (needs upgrade to {HEAD})"
    refused = run_cli(db_url, "models", "list", check=False)
    assert refused.returncode == 1 and "run `modeldex db upgrade`" in refused.stderr
    served = run_cli(db_url, "serve", "--port", "1", check=False)
    assert served.returncode == 1 and "run `modeldex db upgrade`" in served.stderr

    assert f"schema 0001 -> {HEAD}" in run_cli(db_url, "db", "upgrade").stderr
    assert "legacy/model  old       5 (1970-01-01)" in run_cli(db_url, "models", "list").stdout


def test_a_database_from_a_newer_modeldex_is_refused(db_url: str, start_server) -> None:
    run_cli(db_url, "models", "list")
    execute_sql(db_url, "UPDATE alembic_version SET version_num = 'f00d'")
    result = run_cli(db_url, "models", "list", check=False)
    assert result.returncode == 1
    assert "newer than this modeldex knows" in result.stderr
    served = run_cli(db_url, "serve", "--port", "1", check=False)
    assert served.returncode == 1 and "newer than this modeldex knows" in served.stderr
    # `db current` says so too (not "needs upgrade" to an older revision), and `db upgrade` refuses in one line.
    assert run_cli(db_url, "db", "current").stdout.strip() == (
        f"f00d (newer than this modeldex, which knows up to {HEAD}: upgrade modeldex)")
    before = dump_database(db_url)
    upgraded = run_cli(db_url, "db", "upgrade", check=False)
    assert upgraded.returncode == 1 and "Traceback" not in upgraded.stderr
    assert upgraded.stderr == (
        f"Error: the database schema is at revision f00d, newer than this modeldex knows (newest: {HEAD}): "
        "upgrade modeldex, or point it at another database\n")
    assert dump_database(db_url) == before


def test_an_empty_postgres_database_waits_for_db_upgrade(empty_db_url: str) -> None:
    if empty_db_url.startswith("sqlite"):
        # The embedded default needs no set-up: a new SQLite file is created on first use.
        assert "MiniMax-M3" in run_cli(empty_db_url, "models", "list").stdout
        return
    refused = run_cli(empty_db_url, "models", "list", check=False)
    assert refused.returncode == 1 and "no modeldex schema yet: run `modeldex db upgrade`" in refused.stderr
    assert "(empty) -> " in run_cli(empty_db_url, "db", "upgrade").stderr
    assert "MiniMax-M3" in run_cli(empty_db_url, "models", "list").stdout


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    result = run_cli(f"sqlite:///{path}", "models", "list", check=False)
    assert result.returncode == 1 and "no modeldex schema version" in result.stderr


def test_db_upgrade_leaves_another_applications_database_alone(empty_db_url: str) -> None:
    """A URL that names another application's database by mistake: `db upgrade` adds no table to it (then
    every command would take it for a modeldex one)."""
    execute_sql(empty_db_url, "CREATE TABLE customers (id INTEGER)")
    assert run_cli(empty_db_url, "db", "current").stdout == (
        "(none) (other tables, no modeldex schema: not a modeldex database)\n")
    before = dump_database(empty_db_url)
    result = run_cli(empty_db_url, "db", "upgrade", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == (
        "Error: the database has tables but no modeldex schema version; point MODELDEX_DATABASE_URL at an "
        "empty database or a modeldex one\n")
    assert dump_database(empty_db_url) == before
    engine = create_store_engine(empty_db_url)
    try:
        assert migrate.current_revision(engine) is None
    finally:
        engine.dispose()


def test_the_installed_command_runs_as_a_user_runs_it(sqlite_url: str) -> None:
    """The rest of this file forks its runs from a process that has imported modeldex; here the installed
    `modeldex` script starts a new interpreter for each run, and answers exactly as the forked runs do."""
    script = Path(sys.executable).with_name("modeldex")
    env = cli_env(sqlite_url)

    def fresh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=60)

    created = fresh("keys", "create", "ci", "--scope", "admin")
    assert created.returncode == 0 and KEY_LINE.fullmatch(created.stdout), created.stderr
    for args in (("models", "list"), ("keys", "list"), ("--help",), ("models", "show", "MiniMax-M2.7")):
        by_script, forked = fresh(*args), run_cli(sqlite_url, *args)
        assert by_script.returncode == forked.returncode == 0
        # click names the program as it was started: `modeldex`, or `python -m modeldex` for the forked run.
        assert by_script.stdout == forked.stdout.replace("python -m modeldex", "modeldex"), args
    missing = fresh("models", "remove", "no-such-model")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr == run_cli(sqlite_url, "models", "remove", "no-such-model", check=False).stderr
    assert missing.stderr.count("\n") == 1 and "no-such-model" in missing.stderr


# --- an operator's day (a review of the command line) ----------------------------------------------------


def test_tables_align_by_the_columns_a_terminal_gives_each_character(sqlite_url: str) -> None:
    """CJK and most emoji take two columns: padding by len() shifted every column after a wide id."""
    for model_id in ("模型-中文", "café-m", "e-🙂"):
        run_cli(sqlite_url, "models", "add", model_id, "--created", "1700000000")
    rows = run_cli(sqlite_url, "models", "list").stdout.splitlines()
    width = len("MiniMax-M3.1-Flash-Preview")  # the widest id, all ASCII
    assert rows[0] == "ID" + " " * (width - 2 + 2) + "OWNED_BY  CREATED"
    columns = {"模型-中文": 9, "café-m": 6, "e-🙂": 4}
    for model_id, shown in columns.items():
        row = next(r for r in rows if r.startswith(model_id))
        assert row == model_id + " " * (width - shown + 2) + "system    1700000000 (2023-11-14)", row
    run_cli(sqlite_url, "aliases", "add", "別名", "MiniMax-M3")
    assert run_cli(sqlite_url, "aliases", "list").stdout.splitlines() == [
        "ALIAS  TARGET      LISTED", "別名   MiniMax-M3  yes"]


def test_an_update_that_changes_nothing_is_a_usage_error_for_keys_too(db_url: str) -> None:
    """`models update ID` and `upstreams update NAME` without an option are usage errors; `keys update NAME`
    said "updated" and exited 0."""
    run_cli(db_url, "keys", "create", "ci")
    for args in (("keys", "update", "ci"), ("models", "update", "MiniMax-M2")):
        result = run_cli(db_url, *args, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert "Error: nothing to change: give at least one option" in result.stderr
    assert "ci: read, sees all models" in run_cli(db_url, "keys", "update", "ci", "--rate-limit", "10/s").stderr


def test_models_update_clear_names_the_fields_it_takes(db_url: str) -> None:
    """`--clear context-length` (the option's spelling) was "invalid context-length: unknown field", status 1,
    without saying which fields there are; upstreams update --clear lists its settings."""
    run_cli(db_url, "models", "update", "MiniMax-M2", "--context-length", "1000", "--prompt-price", "0.1")
    refused = run_cli(db_url, "models", "update", "MiniMax-M2", "--clear", "context-length", check=False)
    assert refused.returncode == 2
    assert "'context-length' is not one of 'name', 'description', 'context_length'" in refused.stderr
    run_cli(db_url, "models", "update", "MiniMax-M2", "--clear", "context_length", "--clear", "pricing")
    shown = run_cli(db_url, "models", "show", "MiniMax-M2").stdout
    assert "context_length" not in shown and "pricing" not in shown


def test_changes_refuses_a_negative_version_and_says_how_to_read_on(db_url: str) -> None:
    negative = run_cli(db_url, "changes", "--since", "-1", check=False)
    assert negative.returncode == 2 and "Invalid value for '--since'" in negative.stderr  # as --limit 0 is
    run_cli(db_url, "models", "add", "second-version")
    first = run_cli(db_url, "changes", "--limit", "3")  # the seed is version 1: a page of it, and more after
    assert first.stdout.splitlines()[-1].split()[0] == "1"
    assert "more changes: modeldex changes --since 1\n" in first.stderr
    rest = run_cli(db_url, "changes", "--since", "1")
    assert rest.stdout.splitlines()[1:][0].split()[0] == "2" and "more changes" not in rest.stderr


def test_db_refuses_a_server_url_given_before_it(db_url: str) -> None:
    """`modeldex --url URL db current` answered for the local database as if for the server's."""
    run_cli(db_url, "models", "list")
    refused = run_cli(db_url, "--url", "http://127.0.0.1:9", "db", "current", check=False)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.splitlines()[-1] == ("Error: `modeldex db` works on a database, not through a server: "
                                               "give --database-url, not --url")
    assert run_cli(db_url, "--database-url", db_url, "db", "current").stdout.strip() == f"{HEAD} (up to date)"


def test_serve_help_names_the_environment_variables(db_url: str) -> None:
    """--metrics-token's help says "prefer the environment variable": the help must say which."""
    text = " ".join(run_cli(db_url, "serve", "--help").stdout.split())
    for variable in ("MODELDEX_METRICS_TOKEN]", "MODELDEX_METRICS_TOKEN_FILE]", "MODELDEX_RATE_LIMIT]",
                     "MODELDEX_DATABASE_URL]"):
        assert f"[env var: {variable}" in text, variable
