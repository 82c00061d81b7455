"""Tools the tests install from PyPI or npm (LiteLLM's proxy, oidc-provider), kept in the user's cache and
shared by every clone, as pre-commit keeps its tools: installing LiteLLM takes about a minute of CPU, which
each new clone of the repository would otherwise pay again."""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modeldex-tests"


def install_once(folder: Path, what: str, install: Callable[[], None]) -> None:
    """Make sure `folder` holds `what`: `install()` unless a finished install of it is there (its marker
    written last), one process at a time (a lock beside the folder: xdist workers and other clones)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    marker = folder / ".modeldex-installed"
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (marker.exists() and marker.read_text() == what):
            install()
            marker.write_text(what)


def run_installer(command: list[str], what: str, timeout: float, cwd: Path | None = None,
                  env: dict[str, str] | None = None) -> None:
    """Run an installer; if it fails, the error says what failed and ends with what it printed."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"installing {what} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
