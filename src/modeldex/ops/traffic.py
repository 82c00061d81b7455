"""Inference traffic over the last hour, per minute, by model and by key: what the console's Traffic page
shows. Counted in memory by each worker as its requests finish (one dict update under a lock); with several
workers, each writes its figures to the server's per-run directory at most once a second and any of them
adds them all up, as the gateway's route health does. Nothing is stored in the database: a restart starts
from zero."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from modeldex.ops.processes import WorkerShare

WINDOW_MINUTES = 60
_FILE_PREFIX = "traffic-"
# Per minute: (model, key) -> [requests, errors, prompt tokens, completion tokens].
Counts = dict[tuple[str, str], list[int]]


# What a request naming no model of the catalog is counted under (with a space: no model id can be it).
UNKNOWN_MODEL = "(unknown model)"


class Traffic:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._minutes: dict[int, Counts] = {}
        self.changes = 0

    def record(self, model: str | None, key: str | None, status: int, prompt_tokens: int | None,
               completion_tokens: int | None, now: float | None = None) -> None:
        minute = int((time.time() if now is None else now) // 60)
        with self._lock:
            counts = self._minutes.get(minute)
            if counts is None:
                counts = self._minutes[minute] = {}
                for old in [m for m in self._minutes if m <= minute - WINDOW_MINUTES]:
                    del self._minutes[old]
            row = counts.setdefault((model or "", key or ""), [0, 0, 0, 0])
            row[0] += 1
            row[1] += status >= 400
            row[2] += prompt_tokens or 0
            row[3] += completion_tokens or 0
            self.changes += 1

    def snapshot(self) -> list[list[Any]]:
        """The figures as JSON-ready rows: [minute, model, key, requests, errors, prompt, completion]."""
        with self._lock:
            return [[minute, model, key, *row] for minute, counts in self._minutes.items()
                    for (model, key), row in counts.items()]


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, requests: int, errors: int, prompt: int, completion: int) -> None:
        self.requests += requests
        self.errors += errors
        self.prompt_tokens += prompt
        self.completion_tokens += completion


@dataclass
class TrafficReport:
    """The last hour, added up: per model, per key, per minute (oldest first, 60 of them)."""

    total: Totals = field(default_factory=Totals)
    by_model: dict[str, Totals] = field(default_factory=dict)
    by_key: dict[str, Totals] = field(default_factory=dict)
    per_minute: list[Totals] = field(default_factory=list)
    workers: int = 1


def report(rows: Iterable[list[Any]], now: float | None = None, workers: int = 1) -> TrafficReport:
    current = int((time.time() if now is None else now) // 60)
    first = current - WINDOW_MINUTES + 1
    result = TrafficReport(per_minute=[Totals() for _ in range(WINDOW_MINUTES)], workers=workers)
    for minute, model, key, *counts in rows:
        if not first <= minute <= current:
            continue
        result.total.add(*counts)
        result.per_minute[minute - first].add(*counts)
        result.by_model.setdefault(model or "(no model)", Totals()).add(*counts)
        result.by_key.setdefault(key or "(no key)", Totals()).add(*counts)
    return result


class SharedTraffic(WorkerShare):
    """This worker's Traffic, shared with the others through the server's per-run directory."""

    def __init__(self, traffic: Traffic, directory: str | os.PathLike[str], worker: int | None = None) -> None:
        super().__init__(directory, _FILE_PREFIX, traffic.snapshot, lambda: traffic.changes, "modeldex-traffic",
                         worker)
        self.traffic = traffic

    def rows(self) -> tuple[list[list[Any]], int]:
        """Every live worker's rows (this one's as they are now), and how many workers they came from."""
        rows, others = self.traffic.snapshot(), self.others()
        for other in others:
            rows += other
        return rows, 1 + len(others)
