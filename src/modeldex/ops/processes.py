"""Whether a process still runs: what each worker leaves behind (metric files, inference health) is read
only while the worker that wrote it is alive."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
