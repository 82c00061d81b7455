"""A connection flood from one address (bench/flood.py, briefly) leaves a normal client from another
address answered: 2,000 idle or half-sent connections, at least 99 % of the client's requests succeed.
With granian's defaults (1,024 connections a worker) the same flood left it 0 of 20."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .conftest import ROOT, create_key, report


@pytest.mark.parametrize(("mode", "serve_args"), [("idle", ()), ("partial", ("--header-timeout", "2"))])
def test_a_flood_from_one_address_does_not_lock_out_others(sqlite_url: str, start_server, mode: str,
                                                           serve_args: tuple[str, ...]) -> None:
    key = create_key(sqlite_url, "reader")
    server = start_server(sqlite_url, "--no-access-log", *serve_args)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "flood.py"), "--url", server.base_url, "--key", key,
         "--connections", "2000", "--mode", mode, "--requests", "200", "--timeout", "5",
         "--settle", "4" if mode == "partial" else "2"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The flood was really there: 2,000 connections open at once while the client ran.
    held = int(re.search(r"up to (\d+) while it ran", result.stdout).group(1))  # type: ignore[union-attr]
    if mode == "idle":
        assert held >= 1900, result.stdout
    else:
        # The header timeout drops half-sent connections 2 s after they open, and the flooder opens them
        # again at once: counted at one instant, the flood can be between two rounds (1378 and 1812 of 2,000
        # open when the client started, seen on a loaded machine), hence the most open at once during the
        # run; or, where opening them takes longer than the timeout, opened again and again during the run.
        connects = int(re.search(r"(\d+) connects", result.stdout).group(1))  # type: ignore[union-attr]
        assert held >= 1900 or connects >= 5 * 2000, result.stdout
        assert not re.search(r"\b0 dropped by the server", result.stdout), result.stdout  # the header timeout
    assert server.get("/v1/models", key).status_code == 200
    report(" / ".join(line for line in result.stdout.splitlines() if not line.startswith("verdict")))
