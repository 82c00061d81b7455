"""modeldex benchmark: request throughput against granian answering the same bytes with no work (the
Python ceiling) and nginx serving them, catalog scale, and (with --peers) LiteLLM's proxy. Run it through
bench/run.sh, which installs wrk and nginx first. --ceiling-only: retrieve, list, 404 and 401 against
the Python ceiling only, in about two minutes.

Every server is started here on a free loopback port, in temporary directories, and stopped at the end
whatever happens. The output is one markdown report: stdout, and --output FILE.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway_load import GatewayResult, run_gateway
from gateway_load import render as render_gateway
from modeldex.catalog.seed import seed_models
from modeldex_server import create_key, make_catalog
from peers import MASTER_KEY, start_litellm
from procs import stop_all
from report import PeerResult, render
from scale import ScaleResult, measure_scale
from throughput import CEILING_GROUPS, GROUPS, LIST, PATTERN, RETRIEVE, Row, Settings, run_group, run_peer

LIST_10K_MODELS = 10_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float,
                        help="seconds per wrk run (default 8; 1 with --quick; 2 with --ceiling-only)")
    parser.add_argument("--repeat", type=int, help="runs per row; the table shows medians "
                        "(default 3; 2 with --quick; 4 with --ceiling-only)")
    parser.add_argument("--warmup", type=float,
                        help="seconds of unrecorded load first (default 2; 1 with --quick or --ceiling-only)")
    parser.add_argument("--scale", help="catalog sizes for the scale table, comma-separated "
                        "(default 1000,10000,100000; 1000 with --quick; 'none' to skip)")
    parser.add_argument("--scale-repeat", type=int, help="cold starts per catalog size (default 3; 1 with --quick)")
    parser.add_argument("--peers", action="store_true", help="also measure LiteLLM's proxy (installed on first use "
                        "into bench/.venv-peers)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: short runs, small catalog")
    parser.add_argument("--ceiling-only", action="store_true",
                        help="only retrieve, list, 404 and 401, modeldex (defaults and --no-access-log) against "
                        "the Python ceiling: no nginx, scale or peers; about two minutes")
    parser.add_argument("--no-requests", action="store_true", help="skip the request scenarios")
    parser.add_argument("--gateway-only", action="store_true",
                        help="only the inference gateway's scenarios (with --peers, LiteLLM's proxy too); "
                        "about a minute, two with --peers")
    parser.add_argument("--output", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.gateway_only:
        if args.ceiling_only or args.no_requests or args.scale not in (None, "none"):
            parser.error("--gateway-only: no --ceiling-only, --no-requests or --scale")
        args.scale = "none"
        args.duration = args.duration if args.duration is not None else 3.0
        args.repeat = args.repeat if args.repeat is not None else 2
    if args.ceiling_only:
        if args.peers or args.no_requests or args.scale not in (None, "none"):
            parser.error("--ceiling-only measures requests only: no --peers, --no-requests or --scale")
        args.scale = "none"
        # 4 scenarios x 3 servers x (4 runs x 2 s + 1 s of warm-up) = 108 s, and starting the servers.
        args.duration = args.duration if args.duration is not None else (1.0 if quick else 2.0)
        args.repeat = args.repeat if args.repeat is not None else (2 if quick else 4)
        args.warmup = args.warmup if args.warmup is not None else 1.0
    args.duration = args.duration if args.duration is not None else (1.0 if quick else 8.0)
    args.repeat = args.repeat if args.repeat is not None else (2 if quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    args.scale_repeat = args.scale_repeat if args.scale_repeat is not None else (1 if quick else 3)
    scale = args.scale if args.scale is not None else ("1000" if quick else "1000,10000,100000")
    args.scale = [] if scale == "none" else [int(n.replace("_", "")) for n in scale.split(",") if n]
    if args.repeat < 1 or args.duration < 1 or args.scale_repeat < 1:
        parser.error("--repeat and --scale-repeat must be at least 1, --duration at least 1 second")
    return args


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def request_rows(settings: Settings, workdir: Path, ceiling_only: bool = False) -> list[Row]:
    """Every scenario group, each against its own fresh catalog, ceilings and (unless ceiling_only) nginx."""
    groups = CEILING_GROUPS if ceiling_only else GROUPS
    catalogs = {"default": 0, "10k": LIST_10K_MODELS}
    urls = {name: make_catalog(workdir / f"catalog-{name}", catalogs[name]) for name in {g.catalog for g in groups}}
    keys = {}
    for name, url in urls.items():
        read = create_key(url, "bench-read")
        keys[name] = {"read": read, "pattern": create_key(url, "bench-pattern", pattern=PATTERN),
                      "bad": read[:-8] + ("0" * 8 if not read.endswith("0" * 8) else "1" * 8)}
    rows: list[Row] = []
    for group in groups:
        log(f"requests: {group.catalog} catalog, {group.workers} worker(s): "
            f"{', '.join(s.name for s in group.scenarios)}")
        rows += run_group(group, urls[group.catalog], keys[group.catalog], settings, workdir,
                          with_nginx=not ceiling_only)
    return rows


def peer_result(settings: Settings, workdir: Path) -> PeerResult:
    """LiteLLM's proxy on the retrieve and list scenarios; unavailable (with the reason) if it won't run."""
    log("peers: LiteLLM proxy")
    try:
        server, base, startup = start_litellm(workdir / "litellm", [model.id for model in seed_models()])
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # the rest of the report still counts
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        log(f"LiteLLM unavailable: {exc}")
        return PeerResult("LiteLLM", False, reason[:200])
    with server:
        series = run_peer("LiteLLM", server, base, (RETRIEVE, LIST), {"Authorization": f"Bearer {MASTER_KEY}"},
                          settings)
    return PeerResult("LiteLLM", True, startup_s=startup, series=series)


def scale_results(sizes: list[int], repeat: int, workdir: Path) -> list[ScaleResult]:
    results = []
    for size in sizes:
        log(f"scale: {size:,} models, {repeat} cold start(s)")
        result = measure_scale(size, workdir / f"scale-{size}", repeat)
        log(f"  catalog applied in {result.apply_s:.1f}s (not part of the figures); startups "
            f"{', '.join(f'{s:.2f}s' for s in result.startup_s)}")
        results.append(result)
    return results


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = Settings(args.duration, args.repeat, args.warmup)
    workdir = Path(tempfile.mkdtemp(prefix="modeldex-bench-"))
    workdir.chmod(0o711)  # nginx's workers (user nobody under root) pass through it to their files
    started = time.monotonic()
    load_before = os.getloadavg()  # another job on the machine shows here and in the noise
    finished = False
    try:
        plain = not (args.no_requests or args.gateway_only)
        rows = request_rows(settings, workdir, args.ceiling_only) if plain else []
        gateway: GatewayResult | None = None
        if args.gateway_only or (plain and not args.ceiling_only):
            log("gateway: chat completions straight, through modeldex" + (" and LiteLLM" if args.peers else ""))
            # A few seconds per run whatever --duration says for the Models rows: the machine is shared.
            gateway = run_gateway(workdir, min(settings.duration, 3.0), min(settings.repeat, 2), args.peers)
        peer = peer_result(settings, workdir) if args.peers and not args.gateway_only else None
        scale = scale_results(args.scale, args.scale_repeat, workdir)
        finished = True
    finally:
        stop_all()
        if args.keep or not finished:
            log(f"kept {workdir} (server logs, databases, nginx config)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = render(settings, argv, load_before, rows, scale, peer)
    if gateway is not None:
        report += "\n" + render_gateway(gateway)
    print(report)
    if args.output:
        args.output.write_text(report)
        log(f"wrote {args.output}")
    log(f"done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)
