"""The results as markdown: the machine, the request table, catalog scale, the peer, the bars and the noise."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from load import WRK_CONNECTIONS, WRK_THREADS, Series
from scale import ScaleResult
from throughput import BAD_KEY, LIST, LIST_10K, NOOP_SERVER, RETRIEVE, Row, Settings

ROOT = Path(__file__).resolve().parent.parent

REQUESTS_INTRO = (
    "Each row's ratio is against nginx serving the same status and bytes as static files, in the same run. "
    f"`{NOOP_SERVER}` is the Python ceiling: granian, with modeldex's interface, event loop and worker count, "
    "running a handler that answers the same status, body and headers without doing anything. Medians of the repeats; RSS is of all server processes (main and workers), the largest sample "
    "after a run; errors are socket errors plus answers with another status than expected."
)
SCALE_INTRO = (
    "One worker; a fresh SQLite catalog of N generated models. Startup: from spawning `modeldex serve` until "
    "`/healthz` and an authenticated retrieve both answer 200. RSS: all processes (granian's main process "
    "and the worker); the largest process is the per-worker figure. A change is one model added through the "
    "admin API, timed from sending the write until a fresh connection gets the new model: from the server "
    "that wrote it (it reloads before answering the write) and from another server process on the same "
    "catalog (it notices by polling, as other workers and replicas do). Medians of the repeats."
)
BARS_INTRO = "The issue's targets, for information: the harness reports them, it does not assert them."


@dataclass
class PeerResult:
    name: str
    available: bool
    reason: str = ""
    startup_s: float = 0.0
    series: dict[str, Series] | None = None


def _command(argv: list[str]) -> str:
    """The first line a command prints (stdout or stderr), or '?'."""
    try:
        result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine_lines(settings: Settings, argv: list[str], load_before: tuple[float, ...]) -> list[str]:
    commit = _command(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    changed = _command(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "src"])
    nginx = _command(["nginx", "-v"]).rpartition(" ")[2]
    wrk = _command(["wrk", "-v"]).split()[1:2] or ["?"]
    machine = (f"{os.cpu_count()} CPUs (`nproc` {_command(['nproc'])}), {cpu_model()}, Linux {platform.release()}, "
               f"{platform.python_implementation()} {platform.python_version()}")
    load = (f"`wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{settings.duration:g}s --latency` on loopback, "
            f"{settings.repeat} runs per row after {settings.warmup:g} s of warm-up, modeldex and nginx in turns; "
            "wrk and the servers share the CPUs, alike for every row")
    return [
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine}; load average (1, 5, 15 min) before the run: {_loads(load_before)}",
        f"- modeldex commit {commit}{' (src/ modified)' if changed not in ('', '?') else ''}; {nginx}; wrk {wrk[0]}",
        f"- load: {load}",
        f"- command: `{' '.join(['bench/run.sh', *argv])}`",
    ]


def _loads(values: tuple[float, ...]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}×" if value >= 0.1 else f"{value:.2g}×"


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


def _ratio_cell(row: Row) -> str:
    """The ratio of the medians, and the lowest and highest of the per-repeat ratios."""
    ratios = row.run_ratios
    spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
    return _ratio(row.vs_ceiling) + spread


def request_table(rows: list[Row]) -> list[str]:
    lines = [("| scenario | server | workers | req/s | p50 ms | p99 ms | RSS MB | vs nginx (req/s; per-run range) "
              "| noise | errors |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        s = row.series
        lines.append(f"| {row.scenario.label} | {row.server} | {row.workers} | {s.rps:,.0f} | "
                     f"{s.median('p50_ms'):.2f} | {s.median('p99_ms'):.2f} | {s.rss_mb:.1f} | "
                     f"{_ratio_cell(row)} | {_pct(s.noise)} | {s.errors} |")
    return lines


def own_cost_table(rows: list[Row]) -> list[str]:
    """modeldex against the no-op handler: what its own work (key, visibility, routing, headers, metrics)
    costs, as a ratio and as CPU time per request in the worker."""
    lines = ["| scenario | workers | modeldex req/s | no-op handler req/s | modeldex / no-op | modeldex's own µs per request |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row.server != "modeldex":
            continue
        bare = _find(rows, row.scenario.name, NOOP_SERVER, row.workers)
        if bare is None:
            continue
        ours, theirs = row.series.rps, bare.series.rps
        own_us = (1 / ours - 1 / theirs) * 1e6 * row.workers
        lines.append(f"| {row.scenario.label} | {row.workers} | {ours:,.0f} | {theirs:,.0f} | "
                     f"{_ratio(ours / theirs)} | {own_us:.1f} |")
    return lines


def scale_table(results: list[ScaleResult]) -> list[str]:
    m = statistics.median
    lines = [("| models | startup s | RSS MB after start | RSS MB after a list | largest process MB | list bytes "
              "| change served by the writer in s | by another server in s | noise (startup / other server) |"),
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.models:,} | {m(r.startup_s):.2f} | {m(r.rss_started_mb):.1f} | "
                     f"{m(r.rss_listed_mb):.1f} | {max(r.largest_process_mb):.1f} | {r.list_bytes:,} | "
                     f"{m(r.same_server_change_s):.3f} | {m(r.other_server_change_s):.3f} | "
                     f"{_pct(_spread(r.startup_s))} / {_pct(_spread(r.other_server_change_s))} |")
    return lines


def _find(rows: list[Row], name: str, server: str, workers: int) -> Row | None:
    return next((r for r in rows if r.scenario.name == name and r.server == server and r.workers == workers), None)


def peer_table(peer: PeerResult, rows: list[Row]) -> list[str]:
    if not peer.available or peer.series is None:
        return [f"{peer.name}: unavailable ({peer.reason})."]
    name = peer.name
    lines = [f"{name}: started in {peer.startup_s:.2f} s (to an authorized list), one worker.", "",
             (f"| scenario | {name} req/s | p50 ms | p99 ms | RSS MB | modeldex req/s | modeldex / {name} "
              f"| {name} vs nginx | noise | errors |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for scenario in (RETRIEVE, LIST):
        ours = _find(rows, scenario.name, "modeldex", 1)
        s = peer.series[scenario.name]
        ours_rps = ours.series.rps if ours else None
        ceiling = ours.ceiling.rps if ours and ours.ceiling else None
        lines.append(f"| {scenario.label} | {s.rps:,.0f} | {s.median('p50_ms'):.2f} | {s.median('p99_ms'):.2f} | "
                     f"{s.rss_mb:.1f} | {ours_rps or 0:,.0f} | {_ratio(ours_rps / s.rps if ours_rps else None)} | "
                     f"{_ratio(s.rps / ceiling if ceiling else None)} | {_pct(s.noise)} | {s.errors} |")
    return lines


Check = tuple[str, str, bool | None]  # (bar, measured, met; None when not measured)


def _request_checks(rows: list[Row]) -> list[Check]:
    checks: list[Check] = []
    for scenario, bar in ((RETRIEVE, 0.6), (BAD_KEY, 0.6), (LIST, 0.6), (LIST_10K, 0.5)):
        row = _find(rows, scenario.name, "modeldex", 1)
        ratio = row.vs_ceiling if row else None
        checks.append((f"{scenario.label} ≥ {bar}× nginx", _ratio(ratio), None if ratio is None else ratio >= bar))
    return checks


def _peer_checks(rows: list[Row], peer: PeerResult) -> list[Check]:
    checks: list[Check] = []
    for scenario in (RETRIEVE, LIST):
        row = _find(rows, scenario.name, "modeldex", 1)
        if peer.available and peer.series and row:
            ratio = row.series.rps / peer.series[scenario.name].rps
            checks.append((f"{scenario.label} ≥ 100× {peer.name}", _ratio(ratio), ratio >= 100))
        else:
            checks.append((f"{scenario.label} ≥ 100× {peer.name}", "unavailable", None))
    return checks


def _scale_checks(big: ScaleResult) -> list[Check]:
    change = max(statistics.median(big.same_server_change_s), statistics.median(big.other_server_change_s))
    startup = statistics.median(big.startup_s)
    largest = max(big.largest_process_mb)
    return [("a change to a 100k catalog served within 1 s", f"{change:.3f} s", change < 1.0),
            ("memory for 100k models < 500 MB per worker", f"{largest:.0f} MB", largest < 500),
            ("startup with 100k models < 3 s", f"{startup:.3f} s", startup < 3.0)]


def bars(rows: list[Row], scale: list[ScaleResult], peer: PeerResult | None) -> list[str]:
    checks = _request_checks(rows) if rows else []
    if peer is not None:
        checks += _peer_checks(rows, peer)
    big = next((r for r in scale if r.models == 100_000), None)
    if big is not None:
        checks += _scale_checks(big)
    lines = ["| bar | measured | |", "|---|---:|---|"]
    for text, value, met in checks:
        lines.append(f"| {text} | {value} | {'met' if met else 'not measured' if met is None else 'MISSED'} |")
    return lines


def noise_summary(rows: list[Row]) -> str:
    worst = max(rows, key=lambda row: row.series.noise)
    median = statistics.median(row.series.noise for row in rows)
    text = (f"Noise, (max − min) / median of req/s over the repeats of a row: median {_pct(median)}, worst "
            f"{_pct(worst.series.noise)} ({worst.scenario.label}, {worst.server}, workers {worst.workers}).")
    compared = [row for row in rows if len(row.run_ratios) > 1]
    if compared:
        spreads = [_spread(row.run_ratios) for row in compared]
        text += (f" The same measure of the ratio to nginx, run by run: median {_pct(statistics.median(spreads))}, "
                 f"worst {_pct(max(spreads))}.")
    return text


def render(settings: Settings, argv: list[str], load_before: tuple[float, ...], rows: list[Row],
           scale: list[ScaleResult], peer: PeerResult | None) -> str:
    out = ["# modeldex benchmark results", "", *machine_lines(settings, argv, load_before), ""]
    if rows:
        out += ["## Requests", "", REQUESTS_INTRO, "", *request_table(rows), "", noise_summary(rows), "",
                "modeldex's own cost, against the no-op handler in the same run (µs per request: the "
                "difference of the two servers' time per request, per worker):", "", *own_cost_table(rows), ""]
    if scale:
        out += ["## Catalog scale", "", SCALE_INTRO, "", *scale_table(scale), ""]
    if peer is not None:
        out += [f"## Peer: {peer.name} proxy", "", *peer_table(peer, rows), ""]
    out += ["## Bars", "", BARS_INTRO, "", *bars(rows, scale, peer), ""]
    return "\n".join(out)
