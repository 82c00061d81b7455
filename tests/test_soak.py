"""The soak script (bench/soak.py) runs, briefly, as part of the suite: zero 5xx, bounded memory, no fd leak."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def test_a_short_soak_passes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--duration", "8", "--threads", "3"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5xx: 0; transport errors: 0" in result.stdout
    assert "verdict: PASS" in result.stdout
    assert "201:" in result.stdout and "200:" in result.stdout and "404:" in result.stdout
