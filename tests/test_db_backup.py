"""`modeldex db backup PATH` (issue 14): a consistent copy of a live SQLite catalog, taken while a server
serves it and writes go on; the copy serves as the catalog it was."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from modeldex.catalog.service import Catalog
from modeldex.store import open_store

from .conftest import cli_env, create_key, run_cli


def test_a_backup_of_a_live_catalog_is_whole_and_serves(sqlite_url: str, tmp_path: Path, start_server) -> None:
    admin = create_key(sqlite_url, "admin", "admin")
    run_cli(sqlite_url, "models", "add", "before-backup", "--created", "1700000000")
    server = start_server(sqlite_url)

    # Writes go on during the backup, through the store as the server's admin API makes them.
    stop = threading.Event()
    written: list[str] = []

    def write() -> None:
        store = open_store(sqlite_url)
        try:
            catalog = Catalog(store, actor="test-writer")
            while not stop.is_set():
                model_id = f"during-{len(written)}"
                catalog.create("model", {"id": model_id, "created": 1700000000, "owned_by": "test"})
                written.append(model_id)
        finally:
            store.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        backups = [run_cli(sqlite_url, "db", "backup", str(tmp_path / f"backup-{n}.db")) for n in range(3)]
    finally:
        stop.set()
        writer.join()
    assert len(written) > 10, "the writes did not overlap the backups"

    for n, result in enumerate(backups):
        path = tmp_path / f"backup-{n}.db"
        said = re.fullmatch(rf"backed up \S+ to {re.escape(str(path))}: catalog version (\d+), schema \w+, [\d.]+ MB\n",
                            result.stdout)
        assert said, result.stdout
        with sqlite3.connect(path) as copy:
            assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            version = copy.execute("SELECT version FROM catalog_state").fetchone()[0]
            ids = {row[0] for row in copy.execute("SELECT id FROM models")}
            feed = copy.execute("SELECT MAX(version) FROM changes").fetchone()[0]
        assert int(said.group(1)) == version == feed, "the copy is not one version's catalog"
        assert "before-backup" in ids
        # One snapshot: the models written before it are all there, none from after.
        during = sorted((m for m in ids if m.startswith("during-")), key=lambda m: int(m.split("-")[1]))
        assert during == [f"during-{i}" for i in range(len(during))]

    # The copy is a catalog a server serves, keys and all.
    restored = start_server(f"sqlite:///{tmp_path}/backup-2.db")
    assert restored.get("/v1/models/before-backup", admin).status_code == 200
    assert server.get("/v1/models/before-backup", admin).status_code == 200


def test_backup_refusals_are_one_line(sqlite_url: str, tmp_path: Path) -> None:
    run_cli(sqlite_url, "models", "list")
    target = tmp_path / "taken.db"
    target.write_text("something else")
    refused = run_cli(sqlite_url, "db", "backup", str(target), check=False)
    assert refused.returncode == 1 and refused.stderr == f"Error: {target} exists already: name a new file\n"
    assert target.read_text() == "something else"
    missing = run_cli(sqlite_url, "db", "backup", str(tmp_path / "no" / "such.db"), check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("Error: no folder ")
    too_long = run_cli(sqlite_url, "db", "backup", str(tmp_path / ("x" * 300)), check=False)
    assert too_long.returncode == 1 and too_long.stderr.startswith("Error: cannot write the backup to ")
    assert len(too_long.stderr.splitlines()) == 1 and "Traceback" not in too_long.stderr
    postgres = run_cli(sqlite_url, "db", "backup", str(tmp_path / "x.db"), "--database-url",
                       "postgresql://someone@127.0.0.1:1/nothing", check=False)
    assert postgres.returncode == 1 and "pg_dump" in postgres.stderr and len(postgres.stderr.splitlines()) == 1
    assert not list(tmp_path.glob(".*partial*")), "a refused backup left a partial file"


def test_a_folder_the_backup_cannot_be_written_in_is_named_as_the_problem(sqlite_url: str, tmp_path: Path) -> None:
    """The error names the target, not the catalog (which is fine): "backing up catalog.db failed: unable to
    open database file" sent an operator to check the wrong file."""
    run_cli(sqlite_url, "models", "list")
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    as_user: list[str] = []
    if os.geteuid() == 0:  # root writes anywhere: run the command without the capabilities that allow it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and no setpriv to drop CAP_DAC_OVERRIDE")
        caps = "-dac_override,-dac_read_search,-fowner"
        as_user = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--"]
    target = locked / "copy.db"
    result = subprocess.run([*as_user, sys.executable, "-m", "modeldex", "db", "backup", str(target)],
                            env=cli_env(sqlite_url), capture_output=True, text=True, timeout=60)
    locked.chmod(0o755)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == f"Error: cannot write the backup to {target}: unable to open database file\n"
    assert list(locked.iterdir()) == []
