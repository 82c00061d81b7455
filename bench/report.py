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
from throughput import BAD_KEY, LIST, LIST_10K, RETRIEVE, Row, Settings

ROOT = Path(__file__).resolve().parent.parent


def _command(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (result.stdout + result.stderr).strip().splitlines()[0] if (result.stdout + result.stderr).strip() else "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine_lines(settings: Settings, argv: list[str]) -> list[str]:
    commit = _command(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _command(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "src"])
    return [
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} CPUs (`nproc` {_command(['nproc'])}), {cpu_model()}, "
        f"Linux {platform.release()}, {platform.python_implementation()} {platform.python_version()}",
        f"- modeldex: commit {commit}{' (src/ modified)' if dirty not in ('', '?') else ''}; "
        f"{_command(['nginx', '-v']).rpartition(' ')[2]}; wrk {_command(['wrk', '-v']).split()[1]}",
        f"- load: `wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{settings.duration:.0f}s --latency` on loopback, "
        f"{settings.repeat} runs per row (after {settings.warmup:g}s of warm-up), modeldex and nginx in turns; "
        "wrk and the servers share the same CPUs, alike for every row",
        f"- command: `{' '.join(['bench/run.sh', *argv])}`",
    ]


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def request_table(rows: list[Row]) -> list[str]:
    lines = ["| scenario | server | workers | req/s | p50 ms | p99 ms | RSS MB | vs nginx (req/s) | noise | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        s = row.series
        lines.append(f"| {row.scenario.label} | {row.server} | {row.workers} | {s.rps:,.0f} | "
                     f"{s.median('p50_ms'):.2f} | {s.median('p99_ms'):.2f} | {s.rss_mb:.1f} | "
                     f"{_ratio(row.vs_ceiling)} | {_pct(s.noise)} | {s.errors} |")
    return lines


def scale_table(results: list[ScaleResult]) -> list[str]:
    lines = ["| models | startup s | RSS MB after start | RSS MB after a list | largest process MB | "
             "list bytes | change via API served in s | change via CLI served in s | startup noise |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        m = statistics.median
        lines.append(f"| {r.models:,} | {m(r.startup_s):.2f} | {m(r.rss_started_mb):.1f} | "
                     f"{m(r.rss_listed_mb):.1f} | {max(r.largest_process_mb):.1f} | {r.list_bytes:,} | "
                     f"{m(r.api_change_s):.3f} | {m(r.cli_change_s):.3f} | {_pct(r.startup_noise)} |")
    return lines


@dataclass
class PeerResult:
    name: str
    available: bool
    reason: str = ""
    startup_s: float = 0.0
    series: dict[str, Series] | None = None


def peer_table(peer: PeerResult, rows: list[Row]) -> list[str]:
    if not peer.available or peer.series is None:
        return [f"{peer.name}: unavailable ({peer.reason})."]
    lines = [f"{peer.name}: started in {peer.startup_s:.2f} s (to an authorized list).", "",
             f"| scenario | {peer.name} req/s | p50 ms | p99 ms | RSS MB | modeldex req/s | modeldex / {peer.name} "
             f"| {peer.name} vs nginx | noise | errors |",
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


def _find(rows: list[Row], name: str, server: str, workers: int) -> Row | None:
    return next((r for r in rows if r.scenario.name == name and r.server == server and r.workers == workers), None)


def bars(rows: list[Row], scale: list[ScaleResult], peer: PeerResult | None) -> list[str]:
    """The issue's bars, met or missed: information, not assertions."""
    checks: list[tuple[str, str, bool | None]] = []
    for scenario, bar in ((RETRIEVE, 0.6), (BAD_KEY, 0.6), (LIST, 0.6), (LIST_10K, 0.5)) if rows else ():
        row = _find(rows, scenario.name, "modeldex", 1)
        ratio = row.vs_ceiling if row else None
        checks.append((f"{scenario.label} ≥ {bar}× nginx", _ratio(ratio), None if ratio is None else ratio >= bar))
    if peer is not None:
        for scenario in (RETRIEVE, LIST):
            row = _find(rows, scenario.name, "modeldex", 1)
            if peer.available and peer.series and row:
                ratio = row.series.rps / peer.series[scenario.name].rps
                checks.append((f"{scenario.label} ≥ 100× LiteLLM", _ratio(ratio), ratio >= 100))
            else:
                checks.append((f"{scenario.label} ≥ 100× LiteLLM", "unavailable", None))
    big = next((r for r in scale if r.models == 100_000), None)
    if big is not None:
        change = max(statistics.median(big.api_change_s), statistics.median(big.cli_change_s))
        startup = statistics.median(big.startup_s)
        largest = max(big.largest_process_mb)
        checks += [("change to a 100k catalog served within 1 s", f"{change:.3f} s", change < 1.0),
                   ("memory for 100k models < 500 MB per worker", f"{largest:.0f} MB", largest < 500),
                   ("startup with 100k models < 3 s", f"{startup:.2f} s", startup < 3.0)]
    lines = ["| bar | measured | |", "|---|---:|---|"]
    for text, value, met in checks:
        lines.append(f"| {text} | {value} | {'met' if met else 'not measured' if met is None else 'MISSED'} |")
    return lines


def noise_summary(rows: list[Row]) -> str:
    if not rows:
        return "No request scenarios were run."
    worst = max(rows, key=lambda row: row.series.noise)
    median = statistics.median(row.series.noise for row in rows)
    return (f"Noise, (max − min) / median of req/s over the repeats of a row: median {_pct(median)}, "
            f"worst {_pct(worst.series.noise)} ({worst.scenario.label}, {worst.server}, workers {worst.workers}).")


def render(settings: Settings, argv: list[str], rows: list[Row], scale: list[ScaleResult],
           peer: PeerResult | None) -> str:
    out = ["# modeldex benchmark results", "", *machine_lines(settings, argv), ""]
    if rows:
        out += ["## Requests", "", "Each modeldex row's ratio is against nginx serving the same status and "
                "bytes as static files, in the same run. RSS is of all server processes (main and workers), "
                "the largest sample after a run.", "", *request_table(rows), "", noise_summary(rows), ""]
    if scale:
        out += ["## Catalog scale", "", "One worker; a fresh SQLite catalog of N generated models. Startup: from "
                "spawning `modeldex serve` until `/healthz` and an authenticated retrieve answer 200. A change: "
                "one model added; via the admin API, timed from sending the write; via the CLI (another "
                "process), from the CLI's exit; both until a fresh connection gets the new model. "
                "Medians of the repeats.", "", *scale_table(scale), ""]
    if peer is not None:
        out += ["## Peer: LiteLLM proxy", "", *peer_table(peer, rows), ""]
    out += ["## Bars", "", "The issue's targets, for information: the harness reports, it does not assert.", "",
            *bars(rows, scale, peer), ""]
    return "\n".join(out)
