"""Debian packages the tests run (Chromium for the console's pages, nginx for the conformance checker),
installed with apt-get on first use when missing.

One lock for every package: dpkg allows one install at a time on the machine, so two test workers
installing different packages at once had one fail (`apt-get install nginx` exited 100 while another
worker installed Chromium, on a fresh machine)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

from .tool_cache import run_installer

_LOCK = Path(__file__).resolve().parent.parent / ".debian-install.lock"
# Wait for a dpkg run that is not ours (unattended upgrades) rather than fail at once.
_APT = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q"]


def ensure_package(program: Path, package: str) -> Path:
    """`program`, installing `package` first if it is missing (root only; Chromium takes about a minute)."""
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if program.exists():
            return program
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise RuntimeError(f"the tests need {program}: run `apt-get install -y {package}` as root")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run([*_APT, package], capture_output=True, timeout=900, env=env).returncode != 0:
            # Package lists missing or stale: fetch them, then try again.
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=900, env=env)
            run_installer([*_APT, package], package, timeout=900, env=env)
        if not program.exists():
            raise RuntimeError(f"installing {package} did not provide {program}")
        return program
