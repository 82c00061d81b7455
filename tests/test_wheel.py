"""Installing without a clone (issue 14): the built wheel, installed into a new virtual environment, serves.
That proves the package data is in it: the Alembic migrations, the seed catalog, the OpenAPI document, the
web console's templates and static files.

The new environment gets its dependencies from this test's environment through a `.pth` file rather than
from an index (quick, and offline). `venv --system-site-packages` would not do: run from a virtual
environment it still links the base interpreter's packages, not this environment's. This environment's
own (editable) modeldex is not seen there: a `.pth` file's lines are only added to the path, and the
`.pth` files of the folder they name are not read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx

from modeldex.store import migrate

from .conftest import ROOT, cli_env
from .postgres import free_port


def test_the_built_wheel_installs_and_serves(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(dist)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = dist.glob("modeldex-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)

    env = cli_env(f"sqlite:///{tmp_path}/catalog.db")
    env.pop("PYTHONPATH", None)
    where = subprocess.run([str(python), "-c", "import modeldex; print(modeldex.__file__)"], cwd=tmp_path, env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(purelib), f"modeldex came from {where}, not from the wheel"

    # The migrations: `db upgrade` builds a new database from them, one by one.
    old = f"sqlite:///{tmp_path}/migrated.db"
    env_old = {**env, "MODELDEX_DATABASE_URL": old}
    upgraded = subprocess.run([str(venv / "bin" / "modeldex"), "db", "upgrade"], cwd=tmp_path, env=env_old,
                              capture_output=True, text=True, timeout=60)
    assert upgraded.returncode == 0 and f"schema (empty) -> {migrate.SCHEMA_REVISION}" in upgraded.stderr, upgraded.stderr
    current = subprocess.run([str(venv / "bin" / "modeldex"), "db", "current"], cwd=tmp_path, env=env_old,
                             capture_output=True, text=True, timeout=60)
    assert current.returncode == 0 and "needs upgrade" not in current.stdout, current.stdout + current.stderr

    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        server = subprocess.Popen([str(venv / "bin" / "modeldex"), "serve", "--port", str(port)], cwd=tmp_path,
                                  env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "Started worker-1" not in log.read_text():
            assert server.poll() is None, log.read_text()
            time.sleep(0.05)
        assert "created a new catalog" in log.read_text() and "(9 models)" in log.read_text(), log.read_text()
        # The seed catalog, and the OpenAPI document built on the shipped openapi.yaml.
        spec = httpx.get(f"{base}/openapi.json", timeout=10)
        assert spec.status_code == 200 and "retrieveModel" in spec.text
        assert httpx.get(f"{base}/readyz", timeout=10).json()["status"] == "ready"
        # The web console's templates and static files.
        sign_in = httpx.get(f"{base}/console/sign-in", timeout=10)
        assert sign_in.status_code == 200 and "Sign in to the console" in sign_in.text
        assert "navigator.clipboard" in httpx.get(f"{base}/console/static/console.js", timeout=10).text
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
    assert server.returncode == 0, log.read_text()
