"""Headless Chromium for the console's end-to-end tests: Debian's `chromium` package, driven by Playwright
through `executable_path` (Playwright's own browser download is never used), installed on first use."""

from __future__ import annotations

from pathlib import Path

from .debian_packages import ensure_package

CHROMIUM = Path("/usr/bin/chromium")


def ensure_chromium() -> Path:
    """The path of Debian's Chromium, installing the package first if needed."""
    return ensure_package(CHROMIUM, "chromium")
