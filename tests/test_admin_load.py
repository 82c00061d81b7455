"""Heavy admin work (parsing a big catalog file, exporting one, rebuilding the served view after a large
write) runs off the worker's event loop: a Models request on the same worker meanwhile answers at once.
One worker, so the probe and the admin work share it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import orjson

from .conftest import Server, create_key, report

MODELS = 25_000  # admin work of several seconds: long enough that a stalled loop cannot hide
PROBE_BOUND_S = 1.0  # generous (a Models answer takes about a millisecond; other tests share the CPUs): 13 s before


def probe_during(server: Server, key: str, work: Callable[[], httpx.Response]) -> tuple[httpx.Response, float, float, int]:
    """Run `work` (an admin request) in a thread and retrieve a model on the same worker until it is done:
    the work's response and duration, the slowest probe and how many probes ran."""
    result: dict[str, httpx.Response] = {}
    started = time.monotonic()
    thread = threading.Thread(target=lambda: result.setdefault("r", work()))
    thread.start()
    slowest, probes = 0.0, 0
    with httpx.Client(base_url=server.base_url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        while thread.is_alive():
            sent = time.monotonic()
            assert client.get("/v1/models/MiniMax-M3").status_code == 200
            slowest = max(slowest, time.monotonic() - sent)
            probes += 1
            time.sleep(0.02)
    thread.join()
    return result["r"], time.monotonic() - started, slowest, probes


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def bulk_document(prefix: str) -> dict:
    return {"models": [{"id": f"{prefix}/model-{i:06d}", "created": 1_700_000_000} for i in range(MODELS)]}


def test_big_catalog_files_do_not_stall_the_models_routes(sqlite_url: str, start_server) -> None:
    admin = create_key(sqlite_url, "admin", "admin")
    reader = create_key(sqlite_url, "reader")
    server = start_server(sqlite_url, "--workers", "1", "--no-access-log", "--max-body-bytes", str(16 << 20))
    http = httpx.Client(base_url=server.base_url, timeout=300, headers={"Authorization": f"Bearer {admin}"})
    figures = []

    json_body = orjson.dumps(bulk_document("json"))
    response, took, slowest, probes = probe_during(server, reader, lambda: http.post(
        "/v1/admin/catalog/apply", content=json_body, headers={"content-type": "application/json"}))
    assert response.status_code == 200, response.text
    figures.append(f"apply {len(json_body) / 1e6:.1f} MB JSON: {took:.1f} s, slowest Models answer {slowest * 1000:.0f} ms")
    assert probes >= 3 and slowest < PROBE_BOUND_S, figures[-1]

    yaml_body = "".join(f"- id: yaml/model-{i:06d}\n  created: 1700000000\n" for i in range(MODELS // 2))
    yaml_body = "models:\n" + yaml_body
    response, took, slowest, probes = probe_during(server, reader, lambda: http.post(
        "/v1/admin/catalog/apply?dry_run=true", content=yaml_body.encode(), headers={"content-type": "application/yaml"}))
    assert response.status_code == 200, response.text
    figures.append(f"apply {len(yaml_body) / 1e6:.1f} MB YAML (dry run): {took:.1f} s, slowest {slowest * 1000:.0f} ms")
    assert probes >= 3 and slowest < PROBE_BOUND_S, figures[-1]

    response, took, slowest, probes = probe_during(server, reader, lambda: http.get("/v1/admin/catalog?format=yaml"))
    assert response.status_code == 200 and response.text.count("json/model-") == MODELS
    figures.append(f"export {MODELS} models as YAML: {took:.1f} s, slowest {slowest * 1000:.0f} ms")
    assert probes >= 3 and slowest < PROBE_BOUND_S, figures[-1]

    response, took, slowest, probes = probe_during(server, reader, lambda: http.get("/v1/admin/models"))
    assert response.status_code == 200 and len(response.json()["data"]) == MODELS + 9
    figures.append(f"list {MODELS} models (admin): {took:.1f} s, slowest {slowest * 1000:.0f} ms")
    assert slowest < PROBE_BOUND_S, figures[-1]
    # A group of every model: the first answer for a key limited to it, and the first after a later write,
    # decide every model against every member (11 s and 12.5 s before, at 100,000).
    members = [f"json/model-{i:06d}" for i in range(MODELS)]
    assert http.post("/v1/admin/groups", json={"name": "everything", "members": members}).status_code == 201
    grouped = http.post("/v1/admin/keys", json={"name": "grouped", "policy": {"groups": ["everything"]}}).json()
    with httpx.Client(base_url=server.base_url, timeout=120,
                      headers={"Authorization": f"Bearer {grouped['secret']}"}) as client:
        first, took_first = timed(lambda: client.get("/v1/models/json/model-000001"))
        assert first.status_code == 200
        assert http.post("/v1/admin/models", json={"id": "json/model-late"}).status_code == 201
        after, took_after = timed(lambda: client.get("/v1/models/json/model-000002"))
        assert after.status_code == 200
        assert client.get("/v1/models/json/model-late").status_code == 404  # not a member
    figures.append(f"a {MODELS}-member group: first answer {took_first * 1000:.0f} ms, after a write "
                   f"{took_after * 1000:.0f} ms")
    assert took_first < PROBE_BOUND_S * 2 and took_after < PROBE_BOUND_S * 2, figures[-1]
    report("admin work on a 1-worker server: " + "; ".join(figures))
    http.close()
