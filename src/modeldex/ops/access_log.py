"""The access log: one line per request, text or JSON, written in batches.

A request only appends its fields to a list (~0.1 µs); formatting a line (~2 µs, measured) and the
write system call happen on a background thread every `interval` seconds (and at shutdown). The line
names the caller, never its secret, and no header is ever logged.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import TextIO

import orjson

LOGGER = "modeldex.access"
MAX_PATH = 256


class AccessLog:
    def __init__(self, json: bool = False, stream: TextIO | None = None, interval: float = 0.2) -> None:
        self.json = json
        self._stream = stream or sys.stderr
        self._interval = interval
        self._records: deque[tuple[float, str, str, str, str, int, float, str | None, str | None]] = deque()
        self._lock = threading.Lock()
        self._stamped_second, self._stamp = -1, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modeldex-access-log", daemon=True)
        self._thread.start()

    def record(self, request_id: str, method: str, path: str, route: str, status: int, duration_ms: float,
               key_name: str | None, client: str | None) -> None:
        # deque.append and popleft are atomic: no lock on the request path, and no record lost to a flush.
        self._records.append((time.time(), request_id, method, path, route, status, duration_ms, key_name,
                              client))

    def _line(self, now: float, request_id: str, method: str, path: str, route: str, status: int,
              duration_ms: float, key_name: str | None, client: str | None) -> str:
        path = path[:MAX_PATH]
        if self.json:
            return orjson.dumps({
                "ts": now, "level": "info", "logger": LOGGER, "request_id": request_id, "method": method,
                "path": path, "route": route, "status": status, "duration_ms": round(duration_ms, 3),
                "key": key_name, "client": client,
            }).decode()
        second = int(now)
        if second != self._stamped_second:  # strftime is most of a line's cost (~2.5 µs): once a second
            self._stamped_second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return (f"{self._stamp},{int((now - second) * 1000):03d} INFO {LOGGER}: {request_id} {method} {path} "
                f"{status} {duration_ms:.2f}ms key={key_name or '-'} client={client or '-'}")

    def flush(self) -> None:
        with self._lock:  # one flusher at a time (the thread, or close())
            records, pending = self._records, len(self._records)
            if pending:
                lines = [self._line(*records.popleft()) for _ in range(pending)]
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.flush()
