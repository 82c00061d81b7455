"""What the console's pages compute, free of HTTP: searching the served models, paging, diffs between an
entity's before and after, and the latency chart (SVG, drawn here, so the page needs no script)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from modeldex.catalog.entities import Alias, Model

PAGE_SIZE = 50


@dataclass(frozen=True)
class ModelFilter:
    q: str = ""  # a part of the id or the name, any case
    owner: str = ""
    source: str = ""  # "", "operator", "upstream", or one upstream's name
    stale: str = ""  # "", "yes", "no"
    alias: str = ""  # "", "yes" (models with an alias), "no"

    @property
    def active(self) -> bool:
        return any((self.q, self.owner, self.source, self.stale, self.alias))


class ModelIndex:
    """The served models in id order with what searching needs, made once per catalog version (a few
    hundred milliseconds at 100,000 models) and shared by every request on that version."""

    def __init__(self, models: Mapping[str, Model], aliases: Mapping[str, Alias]) -> None:
        self.models = models
        self.aliases_of: dict[str, list[str]] = {}
        for alias in aliases.values():
            self.aliases_of.setdefault(alias.target, []).append(alias.id)
        self.ids = sorted(models)
        self._lower = [f"{model_id}\n{models[model_id].name or ''}".lower() for model_id in self.ids]
        self.owners = sorted({m.owned_by for m in models.values()})
        self.sources = Counter(m.source for m in models.values() if m.source is not None)

    def search(self, wanted: ModelFilter) -> list[str]:
        """The ids that match, in id order."""
        if not wanted.active:
            return self.ids
        q = wanted.q.strip().lower()
        models, aliased = self.models, self.aliases_of
        found = []
        for model_id, text in zip(self.ids, self._lower, strict=True):
            if q and q not in text:
                continue
            model = models[model_id]
            if wanted.owner and model.owned_by != wanted.owner:
                continue
            if wanted.source == "operator" and model.source is not None:
                continue
            if wanted.source == "upstream" and model.source is None:
                continue
            if wanted.source not in ("", "operator", "upstream") and model.source != wanted.source:
                continue
            if wanted.stale and (model.stale_since is not None) != (wanted.stale == "yes"):
                continue
            if wanted.alias and (model_id in aliased) != (wanted.alias == "yes"):
                continue
            found.append(model_id)
        return found


class IndexCache:
    """One `ModelIndex` for the catalog version being served."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._for: tuple[object, object] = (None, None)
        self._index: ModelIndex | None = None

    def get(self, served: Any) -> ModelIndex:
        """The index of `served`'s models and aliases (a version that changed neither shares the last one)."""
        with self._lock:
            models, aliases = self._for
            if self._index is None or models is not served.models or aliases is not served.aliases:
                self._index = ModelIndex(served.models, served.aliases)
                self._for = (served.models, served.aliases)
            return self._index


@dataclass(frozen=True)
class Page:
    items: Sequence[str]
    number: int  # from 1
    pages: int
    total: int

    @property
    def first(self) -> int:
        return 0 if not self.total else (self.number - 1) * PAGE_SIZE + 1


def page_of(ids: Sequence[str], number: int, size: int = PAGE_SIZE) -> Page:
    pages = max(1, -(-len(ids) // size))
    number = min(max(1, number), pages)
    start = (number - 1) * size
    return Page(ids[start:start + size], number, pages, len(ids))


def page_number(raw: str | None) -> int:
    try:
        return max(1, int(raw or "1"))
    except ValueError:
        return 1


@dataclass(frozen=True)
class FieldChange:
    name: str
    before: str | None  # compact JSON; None: absent
    after: str | None


def pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def field_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[FieldChange]:
    """The fields that differ between two versions of an entity, by name."""
    before, after = before or {}, after or {}
    names = sorted(set(before) | set(after))
    return [FieldChange(name, _shown(before[name]) if name in before else None,
                        _shown(after[name]) if name in after else None)
            for name in names if before.get(name, ...) != after.get(name, ...)]


def when(at: float | None, now: float | None = None) -> str:
    """A moment as the pages show it: UTC time and how long ago."""
    if at is None:
        return "never"
    now = time.time() if now is None else now
    ago = now - at
    if ago < 0:
        relative = "in the future"
    elif ago < 90:
        relative = f"{ago:.0f} s ago"
    elif ago < 5400:
        relative = f"{ago / 60:.0f} min ago"
    elif ago < 172800:
        relative = f"{ago / 3600:.0f} h ago"
    else:
        relative = f"{ago / 86400:.0f} days ago"
    return f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(at))} ({relative})"


def latency_chart(points: Iterable[Sequence[Any]], width: int = 240, height: int = 48) -> str:
    """An SVG sparkline of poll latencies (ms), failed polls as red marks on the axis. Only numbers go into
    the markup; the page inserts it as is."""
    polls = [(float(p[1]) if p[1] is not None else None, bool(p[2])) for p in points if len(p) >= 3]
    if not polls:
        return ""
    highest = max((ms for ms, _ in polls if ms is not None), default=1.0) or 1.0
    step = width / max(1, len(polls) - 1)
    line, marks = [], []
    for n, (ms, ok) in enumerate(polls):
        x = round(n * step if len(polls) > 1 else width / 2, 1)
        if ok and ms is not None:
            line.append(f"{x},{round(height - 4 - (height - 8) * ms / highest, 1)}")
        else:
            marks.append(f'<rect x="{max(0.0, x - 2)}" y="{height - 6}" width="4" height="6" class="fail"/>')
    path = f'<polyline points="{" ".join(line)}" class="line"/>' if len(line) > 1 else ""
    dots = "".join(f'<circle cx="{xy.split(",")[0]}" cy="{xy.split(",")[1]}" r="2" class="dot"/>' for xy in line[-1:])
    label = f"poll latency, last {len(polls)} polls, highest {highest:.0f} ms"
    return (f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'aria-label="{label}"><title>{label}</title>'
            f'<line x1="0" y1="{height - 1}" x2="{width}" y2="{height - 1}" class="axis"/>{path}{dots}{"".join(marks)}</svg>')


def traffic_chart(minutes: Sequence[Any], width: int = 600, height: int = 80) -> str:
    """An SVG bar chart of requests per minute (oldest on the left), errors in red at the foot of each bar."""
    highest = max((m.requests for m in minutes), default=0)
    if not highest:
        return ""
    bar = width / len(minutes)
    bars = []
    for n, m in enumerate(minutes):
        if not m.requests:
            continue
        x, total = round(n * bar, 1), (height - 2) * m.requests / highest
        errors = (height - 2) * m.errors / highest
        bars.append(f'<rect x="{x}" y="{round(height - total, 1)}" width="{round(bar - 1, 1)}" '
                    f'height="{round(total, 1)}" class="bar"/>')
        if m.errors:
            bars.append(f'<rect x="{x}" y="{round(height - errors, 1)}" width="{round(bar - 1, 1)}" '
                        f'height="{round(errors, 1)}" class="fail"/>')
    label = f"requests per minute over the last hour, highest {highest}"
    return (f'<svg class="chart wide" role="img" viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
            f'aria-label="{label}"><title>{label}</title>'
            f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}" class="axis"/>{"".join(bars)}</svg>')
