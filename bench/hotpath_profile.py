"""Where modeldex's own time per request goes: each piece of the Models hot path timed in a live granian
worker, on the real objects of a real request (granian's scope, headers and protocol; the app's catalog,
key table, metrics and access log), with `modeldex serve`'s defaults (access log on).

    .venv/bin/python bench/hotpath_profile.py [--loops 5000] [--repeat 25]

It starts granian as `modeldex serve` does (bench/ceiling.py's `serve`) on modeldex's app wrapped by
`Profiled`, which answers every request through the app, except one carrying `x-profile: <scenario>`:
on that one it times each piece in a loop (the best of --repeat rounds, the empty loop's cost taken off)
and writes the figures to a file. granian ignores a second answer to a request, so the whole
`app.__rsgi__` can run again and again on the same scope and protocol; so can the ceiling's
(bench/ceiling.py's app with the same answer), and the difference is modeldex's own work, the same
figure the benchmark's "own µs" estimates from req/s. Pieces overlap (a whole contains its parts), so
they do not add up; the whole does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ceiling import constant_app, serve
from in_worker import SCENARIOS, WARMUP_REQUESTS, Measuring, drive, prepare

HOST = "127.0.0.1"

PROFILE_HEADER = "x-profile"
OUT_ENV = "HOTPATH_PROFILE_OUT"
LOOPS_ENV = "HOTPATH_PROFILE_LOOPS"
OWN = "modeldex's own: app.__rsgi__() minus the ceiling's"
OWN_NO_LOG = "modeldex's own, as with --no-access-log"
WHOLE = "app.__rsgi__(), whole"
CEILING_WHOLE = "the ceiling's __rsgi__(), whole (its answer call repeated: granian ignores it)"
ANSWER_CALL = "  protocol.response_bytes() alone, repeated"


def best_ns(fn: Callable[[], object], loops: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter_ns()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter_ns() - started) / loops)
    return best


def pieces(app: Any, scope: Any, protocol: Any, scenario: str) -> list[tuple[str, Callable[[], object]]]:
    """The hot path's pieces, as app.py and api/model_routes.py run them, on this request's objects."""
    from modeldex.api import errors, paths
    from modeldex.api.app import header_bytes
    from modeldex.api.callers import bearer_token
    from modeldex.api.model_routes import (
        _CACHE_CONTROL,
        _VARY,
        JSON,
        NotNow,
        error_answer,
        etag_matches,
        models_label,
    )
    from modeldex.catalog.callers import Caller
    from modeldex.catalog.keys import hash_secret, lookup_id_of, mask
    from modeldex.ops import metrics

    models, limiter, log, callers = app.models, app.limiter, app.access_log, app.callers
    headers, path, method, query = scope.headers, scope.path, scope.method, scope.query_string
    rendered = app.live.current
    authorization = headers.get("authorization")
    token = bearer_token(authorization) or ""
    client = app.client_address(scope.client, headers)
    request_id = next(app.request_ids)
    route = models.route(paths.normalize(path))
    label = models_label(route[0], method)
    identified = callers.identify(rendered.keys, authorization)
    not_now = NotNow(identified)
    status, response_headers, body, key_name = drive(
        models.answer(method, route, query, headers, client, request_id, not_now))
    policy = identified.policy if isinstance(identified, Caller) else None
    view = rendered.view(policy) if policy is not None else None
    etag = view.etag if view is not None else ""
    model_id = route[1] or ""

    ceiling = constant_app(status, response_headers, body)
    timed: list[tuple[str, Callable[[], object]]] = [
        (WHOLE, lambda: drive(app.__rsgi__(scope, protocol))),
        (CEILING_WHOLE, lambda: drive(ceiling.__rsgi__(scope, protocol))),
        ("  app._answer() (models.answer_now() where it answers)",
         lambda: app._answer(method, path, query, headers, client, request_id, True)),
        ("  models.remembered() (an answer already worked out)",
         lambda: models.remembered(method, path, query, headers, client)),
        ("  models.answer(), whole (the path that may wait)",
         lambda: drive(models.answer(method, route, query, headers, client, request_id, not_now))),
        (ANSWER_CALL, lambda: protocol.response_bytes(status, response_headers, body)),
        ("access_log.record()", lambda: log.record(request_id, method, path, label, status, 10.0, 10.00025,
                                                   key_name, client)),
        ("  its time stamp: strftime(localtime())",
         lambda: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time()))),
        ("metrics.observe()", lambda: metrics.observe(label, status, 0.00025)),
        ("request id", lambda: next(app.request_ids)),
        ("client address", lambda: app.client_address(scope.client, headers)),
        ("header-size walk (app.header_bytes)", lambda: header_bytes(headers)),
        ("  headers.items() alone", headers.items),
        ("  sum(map(len, keys())) + sum(map(len, values()))",
         lambda: sum(map(len, headers.keys())) + sum(map(len, headers.values()))),
        ("  len(''.join(keys())) + len(''.join(values())) + 4 * len(headers)",
         lambda: len("".join(headers.keys())) + len("".join(headers.values())) + 4 * len(headers)),
        ("  len(headers)", lambda: len(headers)),
        ("  scope.client alone", lambda: scope.client),
        ("time.perf_counter() x2", lambda: (time.perf_counter(), time.perf_counter())),
        ("scope attributes (method, path, query_string, headers, client)",
         lambda: (scope.method, scope.path, scope.query_string, scope.headers, scope.client)),
        ("paths.normalize() + route()", lambda: models.route(paths.normalize(path))),
        ("models_label()", lambda: models_label(route[0], method)),
        ("headers.get('authorization')", lambda: headers.get("authorization")),
        ("callers.identify() (a known key: one memo lookup)",
         lambda: callers.identify(rendered.keys, authorization)),
        ("  key table: bearer parse, lookup, sha256, compare", lambda: rendered.keys.caller(token)),
        ("  hash_secret() (sha256 of the key)", lambda: hash_secret(token)),
        ("  bearer_token() + lookup_id_of()", lambda: lookup_id_of(bearer_token(authorization) or "")),
        ("client in limiter.suspects + limits()", lambda: (client in limiter.suspects, limiter.limits(None))),
        ("live.current", lambda: app.live.current),
    ]
    if view is not None:
        timed += [
            ("rendered.view(policy)", lambda: rendered.view(policy)),
            ("  hash(policy)", lambda: hash(policy)),
            ("headers.get('if-none-match') + etag_matches()",
             lambda: etag_matches(headers.get("if-none-match"), etag)),
            ("view.bodies.get(id)", lambda: view.bodies.get(model_id)),
            ("response header list", lambda: [JSON, ("x-request-id", request_id), ("etag", etag), _CACHE_CONTROL,
                                              _VARY]),
        ]
    if scenario == "unknown":
        timed.append(("model_not_found() + error_answer() (body: orjson)",
                      lambda: error_answer(errors.model_not_found(model_id), request_id)))
    if scenario == "bad_key":
        timed += [
            ("callers.caller() raising, caught", lambda: _raises(lambda: drive(callers.caller(
                rendered.keys, authorization, client)))),
            ("invalid_key() (mask) + error_answer() (body: orjson)",
             lambda: error_answer(errors.invalid_key(token), request_id)),
            ("  mask()", lambda: mask(token)),
        ]
    return timed


def _raises(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:
        return
    raise RuntimeError("expected an error")


class Profiled(Measuring):
    """modeldex's app, and the timing of its pieces on a request that asks for it."""

    header = PROFILE_HEADER

    def measure(self, scope: Any, protocol: Any, scenario: str) -> None:
        drive(self.app.__rsgi__(scope, protocol))  # the real answer, first
        loops, repeat = (int(n) for n in os.environ[LOOPS_ENV].split(","))
        empty = best_ns(lambda: None, loops, repeat)
        timed = pieces(self.app, scope, protocol, scenario)
        results = {name: max(0.0, best_ns(fn, loops, repeat) - empty) / 1000 for name, fn in timed}
        # The app as --no-access-log makes it (no AccessLog object), for the log's cost in place.
        access_log, self.app.access_log = self.app.access_log, None
        try:
            whole_no_log = max(0.0, best_ns(dict(timed)[WHOLE], loops, repeat) - empty) / 1000
        finally:
            self.app.access_log = access_log
        # Both wholes include the same answer call (and a coroutine): the difference is modeldex's own.
        results = {OWN: results[WHOLE] - results[CEILING_WHOLE],
                   OWN_NO_LOG: whole_no_log - results[CEILING_WHOLE], **results}
        Path(os.environ[OUT_ENV], f"{scenario}.json").write_text(json.dumps(results))


def create_app() -> Profiled:
    return Profiled()


def request(connection: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> int:
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Many short rounds: on a shared machine some of them run undisturbed, and the best one counts.
    parser.add_argument("--loops", type=int, default=5_000, help="calls per round (default 5000)")
    parser.add_argument("--repeat", type=int, default=25, help="rounds; the best counts (default 25)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server process itself
    args = parser.parse_args(argv)
    if args.serve:
        serve("hotpath_profile:create_app", HOST, args.serve, 1)
        return 0

    # Here, not at the top: granian's workers import this module, and procs sets signal handlers.
    from procs import Server, free_port, http_ok, stop_all

    workdir = Path(tempfile.mkdtemp(prefix="modeldex-profile-"))
    try:
        keys, env = prepare(workdir, "profile-read")
        env.update({OUT_ENV: str(workdir), LOOPS_ENV: f"{args.loops},{args.repeat}"})
        port = free_port()
        server = Server("modeldex, profiled", [sys.executable, __file__, "--serve", str(port)],
                        workdir / "server.log", env=env, cwd=Path(__file__).resolve().parent)
        server.wait_ready(lambda: http_ok(f"http://{HOST}:{port}/healthz"), timeout=60)
        connection = http.client.HTTPConnection(HOST, port, timeout=600)
        table: dict[str, dict[str, float]] = {}
        for scenario, (path, key) in SCENARIOS.items():
            headers = {"Authorization": f"Bearer {keys[key]}"}
            for _ in range(WARMUP_REQUESTS):
                request(connection, path, headers)
            status = request(connection, path, {**headers, PROFILE_HEADER: scenario})
            out = workdir / f"{scenario}.json"
            server.wait_ready(out.exists, timeout=600)  # the answer goes out first, the timing follows
            time.sleep(0.1)  # written whole by then (a few hundred bytes)
            table[scenario] = json.loads(out.read_text())
            print(f"profiled {scenario} (answered {status})", file=sys.stderr, flush=True)
        server.stop()
    finally:
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    names = list(dict.fromkeys(name for figures in table.values() for name in figures))
    print("| µs per call | " + " | ".join(table) + " |")
    print("|---|" + "---:|" * len(table))
    for name in names:
        cells = [f"{table[s][name]:.2f}" if name in table[s] else "" for s in table]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
