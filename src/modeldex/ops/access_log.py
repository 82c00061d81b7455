"""The access log: one line per request, text or JSON, written in batches.

Formatting a line is cheap; a write system call per request is not, so lines are buffered and a
background thread writes them out every `interval` seconds (and at shutdown). The line names the key,
never its secret, and no header is ever logged.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

import orjson

LOGGER = "modeldex.access"
MAX_PATH = 256


class AccessLog:
    def __init__(self, json: bool = False, stream: TextIO | None = None, interval: float = 0.2) -> None:
        self.json = json
        self._stream = stream or sys.stderr
        self._interval = interval
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modeldex-access-log", daemon=True)
        self._thread.start()

    def record(self, request_id: str, method: str, path: str, route: str, status: int, duration_ms: float,
               key_name: str | None, client: str | None) -> None:
        now = time.time()
        path = path[:MAX_PATH]
        if self.json:
            line = orjson.dumps({
                "ts": now, "level": "info", "logger": LOGGER, "request_id": request_id, "method": method,
                "path": path, "route": route, "status": status, "duration_ms": round(duration_ms, 3),
                "key": key_name, "client": client,
            }).decode()
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
            line = (f"{stamp} INFO {LOGGER}: {request_id} {method} {path} {status} {duration_ms:.2f}ms "
                    f"key={key_name or '-'} client={client or '-'}")
        with self._lock:
            self._lines.append(line)

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        if lines:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.flush()
