"""Headless Chromium for the console's end-to-end tests: Debian's `chromium` package, driven by Playwright
through `executable_path` (Playwright's own browser download is never used). Installed on first use with
apt-get when missing, under a file lock so parallel test workers install it once."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
_LOCK = Path(__file__).resolve().parent.parent / ".chromium-install.lock"


def ensure_chromium() -> Path:
    """The path of Debian's Chromium, installing the package first if needed (root only; about a minute)."""
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if CHROMIUM.exists():
            return CHROMIUM
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise RuntimeError("the console tests need Chromium: run `apt-get install -y chromium` as root")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        result = subprocess.run(install, capture_output=True, text=True, timeout=900, env=env)
        if result.returncode != 0:  # package lists missing or stale: fetch them, then try again
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=900, env=env)
            result = subprocess.run(install, capture_output=True, text=True, timeout=900, env=env)
        if result.returncode != 0 or not CHROMIUM.exists():
            raise RuntimeError(f"installing chromium failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        return CHROMIUM
