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
from throughput import (
    BAD_KEY,
    CEILING,
    LIST,
    LIST_10K,
    MODELDEX,
    MODELDEX_NO_LOG,
    RETRIEVE,
    UNKNOWN,
    Row,
    Settings,
    run_ratios,
)

ROOT = Path(__file__).resolve().parent.parent

REQUESTS_INTRO = (
    f"`{MODELDEX}` runs as `modeldex serve` starts (access log on, written to a file), `{MODELDEX_NO_LOG}` "
    "without its access log; both with `--auth-failure-limit off`, so that the 401 row measures the wrong-key "
    f"path rather than 429s (without failures, the limit costs nothing). `{CEILING}` is the Python ceiling: "
    "granian started with `modeldex serve`'s options (RSGI, uvloop, the same workers), running an app that does "
    "nothing but answer modeldex's status, header list and body for the scenario, as constants "
    "(`bench/ceiling.py`). nginx serves the same status and bytes as static files. Medians of the repeats; RSS is "
    "of all server processes (main and workers), the largest sample after a run; errors are socket errors "
    "plus answers with another status than expected."
)
CEILING_INTRO = (
    "modeldex against the Python ceiling in the same run: the ratio of the medians of req/s (in brackets, the "
    "lowest and highest ratio of runs made back to back), and modeldex's own µs per request two ways: "
    "(1/modeldex − 1/ceiling) × workers, from req/s, the time a request takes longer when wrk and the servers "
    "share the CPUs; and own CPU µs, the server's CPU time per answered request (all its processes and threads, "
    "from /proc) minus the ceiling's, which other load on the machine disturbs much less. The access log's "
    "share is the same difference between the two settings."
)
CEILING_BAR = 0.85
CEILING_BAR_SCENARIOS = (RETRIEVE, LIST, UNKNOWN, BAD_KEY)
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
            f"{settings.repeat} runs per row after {settings.warmup:g} s of warm-up, the servers in turns; "
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


def _range(ratios: list[float]) -> str:
    return f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""


def request_table(rows: list[Row]) -> list[str]:
    with_nginx = any(row.nginx is not None for row in rows)
    nginx_head, nginx_rule = (" vs nginx (req/s; per-run range) |", "---:|") if with_nginx else ("", "")
    lines = [(f"| scenario | server | workers | req/s | p50 ms | p99 ms | server CPU µs per request | RSS MB |"
              f"{nginx_head} noise | errors |"),
             f"|---|---|---:|---:|---:|---:|---:|---:|{nginx_rule}---:|---:|"]
    for row in rows:
        s = row.series
        nginx = f" {_ratio(row.vs_nginx)}{_range(row.nginx_run_ratios)} |" if with_nginx else ""
        lines.append(f"| {row.scenario.label} | {row.server} | {row.workers} | {s.rps:,.0f} | "
                     f"{s.median('p50_ms'):.2f} | {s.median('p99_ms'):.2f} | {s.cpu_us:.1f} | {s.rss_mb:.1f} |{nginx} "
                     f"{_pct(s.noise)} | {s.errors} |")
    return lines


def _own_us(ours: Series, ceiling: Series, workers: int) -> float:
    return (1 / ours.rps - 1 / ceiling.rps) * 1e6 * workers


def ceiling_table(rows: list[Row]) -> list[str]:
    """Both modeldex settings against the Python ceiling, per scenario."""
    lines = [("| scenario | workers | ceiling req/s | modeldex req/s | modeldex / ceiling | own µs | own CPU µs | "
              "--no-access-log req/s | / ceiling | own µs | own CPU µs | access log µs (CPU µs) |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row.server != CEILING:
            continue
        ceiling = row.series
        ours = _find(rows, row.scenario.name, MODELDEX, row.workers)
        quiet = _find(rows, row.scenario.name, MODELDEX_NO_LOG, row.workers)
        if ours is None or quiet is None:
            continue
        cells = []
        for r in (ours, quiet):
            ratio = _ratio(r.series.rps / ceiling.rps) + _range(run_ratios(r.series, ceiling))
            cells += [f"{r.series.rps:,.0f}", ratio, f"{_own_us(r.series, ceiling, row.workers):.1f}",
                      f"{r.series.cpu_us - ceiling.cpu_us:.1f}"]
        log_us = _own_us(ours.series, quiet.series, row.workers)
        log_cpu = ours.series.cpu_us - quiet.series.cpu_us
        lines.append(f"| {row.scenario.label} | {row.workers} | {ceiling.rps:,.0f} | {' | '.join(cells)} | "
                     f"{log_us:.1f} ({log_cpu:.1f}) |")
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
             (f"| scenario | {name} req/s | p50 ms | p99 ms | RSS MB | {MODELDEX_NO_LOG} req/s | modeldex / {name} "
              f"| {name} vs nginx | noise | errors |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for scenario in (RETRIEVE, LIST):
        ours = _find(rows, scenario.name, MODELDEX_NO_LOG, 1)  # LiteLLM runs without its access log too
        s = peer.series[scenario.name]
        ours_rps = ours.series.rps if ours else None
        ceiling = ours.nginx.rps if ours and ours.nginx else None
        lines.append(f"| {scenario.label} | {s.rps:,.0f} | {s.median('p50_ms'):.2f} | {s.median('p99_ms'):.2f} | "
                     f"{s.rss_mb:.1f} | {ours_rps or 0:,.0f} | {_ratio(ours_rps / s.rps if ours_rps else None)} | "
                     f"{_ratio(s.rps / ceiling if ceiling else None)} | {_pct(s.noise)} | {s.errors} |")
    return lines


Check = tuple[str, str, bool | None]  # (bar, measured, met; None when not measured)


def _request_checks(rows: list[Row]) -> list[Check]:
    checks: list[Check] = []
    for scenario in CEILING_BAR_SCENARIOS:
        ours, ceiling = _find(rows, scenario.name, MODELDEX, 1), _find(rows, scenario.name, CEILING, 1)
        ratio = ours.series.rps / ceiling.series.rps if ours and ceiling else None
        checks.append((f"{scenario.label} ≥ {CEILING_BAR}× the Python ceiling (defaults)", _ratio(ratio),
                       None if ratio is None else ratio >= CEILING_BAR))
    if not any(row.nginx is not None for row in rows):  # --ceiling-only
        return checks
    for scenario, bar in ((RETRIEVE, 0.6), (BAD_KEY, 0.6), (LIST, 0.6), (LIST_10K, 0.5)):
        row = _find(rows, scenario.name, MODELDEX, 1)
        ratio = row.vs_nginx if row else None
        checks.append((f"{scenario.label} ≥ {bar}× nginx (defaults)", _ratio(ratio),
                       None if ratio is None else ratio >= bar))
    return checks


def _peer_checks(rows: list[Row], peer: PeerResult) -> list[Check]:
    checks: list[Check] = []
    for scenario in (RETRIEVE, LIST):
        row = _find(rows, scenario.name, MODELDEX_NO_LOG, 1)
        if peer.available and peer.series and row:
            ratio = row.series.rps / peer.series[scenario.name].rps
            checks.append((f"{scenario.label} ≥ 100× {peer.name} (both without access log)", _ratio(ratio),
                           ratio >= 100))
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
    spreads = []
    for row in rows:
        ceiling = _find(rows, row.scenario.name, CEILING, row.workers)
        if row.server in (MODELDEX, MODELDEX_NO_LOG) and ceiling is not None and len(row.series.runs) > 1:
            spreads.append(_spread(run_ratios(row.series, ceiling.series)))
    if spreads:
        text += (f" The same measure of modeldex's ratio to the ceiling, run by run: median "
                 f"{_pct(statistics.median(spreads))}, worst {_pct(max(spreads))}.")
    nginx_spreads = [_spread(row.nginx_run_ratios) for row in rows if len(row.nginx_run_ratios) > 1]
    if nginx_spreads:
        text += (f" Of the ratio to nginx: median {_pct(statistics.median(nginx_spreads))}, "
                 f"worst {_pct(max(nginx_spreads))}.")
    return text


def render(settings: Settings, argv: list[str], load_before: tuple[float, ...], rows: list[Row],
           scale: list[ScaleResult], peer: PeerResult | None) -> str:
    out = ["# modeldex benchmark results", "", *machine_lines(settings, argv, load_before), ""]
    if rows:
        out += ["## Requests", "", REQUESTS_INTRO, "", *request_table(rows), "", noise_summary(rows), "",
                "### Against the Python ceiling", "", CEILING_INTRO, "", *ceiling_table(rows), ""]
    if scale:
        out += ["## Catalog scale", "", SCALE_INTRO, "", *scale_table(scale), ""]
    if peer is not None:
        out += [f"## Peer: {peer.name} proxy", "", *peer_table(peer, rows), ""]
    met = bars(rows, scale, peer)
    if len(met) > 2:  # more than the table's head (a gateway-only run has none of these)
        out += ["## Bars", "", BARS_INTRO, "", *met, ""]
    return "\n".join(out)
