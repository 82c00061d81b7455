"""The access log's lines, made in-process: one line a record, whatever a client put in the fields it shapes."""

from __future__ import annotations

import io
import re
import time

import orjson
import pytest

from modeldex.ops.access_log import AccessLog

LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO modeldex\.access: (\S+) (\S+) (\S+) (\d+) "
                  r"(\d+\.\d\d)ms key=(\S+) client=(\S+)")


def lines_of(log: AccessLog, stream: io.StringIO) -> list[str]:
    log.close()
    text = stream.getvalue()
    assert text.endswith("\n")
    return text[:-1].split("\n")


@pytest.mark.parametrize("path, shown", [
    ("/v1/models/MiniMax-M2.7", "/v1/models/MiniMax-M2.7"),
    ("/v1/models/a\nb 200 0.01ms key=admin", "/v1/models/a\\x0ab 200 0.01ms key=admin"),
    ("/v1/models/\x1b[2J", "/v1/models/\\x1b[2J"),
    ("/v1/models/back\\slash", "/v1/models/back\\\\slash"),
    ("/v1/models/caf\u00e9", "/v1/models/caf\u00e9"),  # printable: as it is
    ("/v1/models/x\u2028y\x85", "/v1/models/x\\u2028y\\x85"),
])
def test_a_text_line_a_record_with_client_fields_escaped(path: str, shown: str) -> None:
    stream = io.StringIO()
    log = AccessLog(stream=stream, interval=3600)
    log.record("rid-1", "GET", "/v1/models", "list", 200, 10.0, 10.0015, "reader", "10.0.0.1")
    log.record("rid-2", "GET", path, "retrieve", 404, 10.0, 10.00025, None, "10.0.0.2\r\n")
    log.record("rid-3", "GET", "/v1/models", "list", 200, 10.0, 10.002, "ops\tteam", None)
    first, second, third = lines_of(log, stream)
    assert LINE.fullmatch(first).groups() == ("rid-1", "GET", "/v1/models", "200", "1.50", "reader", "10.0.0.1")
    assert second.endswith(f" rid-2 GET {shown} 404 0.25ms key=- client=10.0.0.2\\x0d\\x0a")
    assert third.endswith(" rid-3 GET /v1/models 200 2.00ms key=ops\\x09team client=-")


def test_a_duration_and_a_time_stamp_read_as_the_logging_module_writes_them() -> None:
    """Durations come from a table up to 50 ms and are formatted beyond; the stamp is the wall clock of the
    moment the request was answered, read off the request clock."""
    stream = io.StringIO()
    log = AccessLog(stream=stream, interval=3600)
    durations_ms = [hundredths / 100 + offset for hundredths in range(0, 5200, 7) for offset in (0.003, 0.007)]
    for duration_ms in durations_ms:
        log.record("rid", "GET", "/v1/models", "list", 200, 10.0, 10.0 + duration_ms / 1000, "k", "c")
    now = time.perf_counter()
    log.record("rid-now", "GET", "/v1/models", "list", 200, now, now, "k", "c")
    log.record("rid-odd", "GET", "/v1/models", "list", 799, now, now, "k", "c")
    *lines, current, odd = lines_of(log, stream)
    assert [LINE.fullmatch(line).group(5) for line in lines] == [f"{ms:.2f}" for ms in durations_ms]
    stamp = time.mktime(time.strptime(current[:19], "%Y-%m-%d %H:%M:%S")) + int(current[20:23]) / 1000
    assert abs(stamp - time.time()) < 5
    assert " rid-odd GET /v1/models 799 0.00ms " in odd


def test_a_long_path_is_cut_and_a_big_batch_keeps_every_record_in_order() -> None:
    stream = io.StringIO()
    log = AccessLog(stream=stream, interval=3600)
    for n in range(5000):
        log.record(f"rid-{n}", "GET", "/v1/models/" + "x" * 1000, "retrieve", 404, 10.0, 10.0001, "k", "c")
    lines = lines_of(log, stream)
    assert len(lines) == 5000
    assert [line.split()[4] for line in lines] == [f"rid-{n}" for n in range(5000)]
    assert all(len(line.split()[6]) == 256 for line in lines)


def test_json_lines_escape_what_readers_take_for_line_breaks() -> None:
    stream = io.StringIO()
    log = AccessLog(json=True, stream=stream, interval=3600)
    log.record("rid-1", "GET", "/v1/models/a\u2028b\x85", "retrieve", 404, 10.0, 10.0005, None, "10.0.0.1")
    (line,) = lines_of(log, stream)
    assert "\u2028" not in line and "\x85" not in line
    record = orjson.loads(line)
    assert record["path"] == "/v1/models/a\u2028b\x85" and record["status"] == 404 and record["key"] is None


@pytest.mark.parametrize("json", [False, True])
def test_an_inference_line_escapes_the_model_a_request_body_named(json: bool) -> None:
    stream = io.StringIO()
    log = AccessLog(json=json, stream=stream, interval=3600)
    log.record_inference("rid-1", "/v1/chat/completions", 404, 1.0, "reader", "10.0.0.1",
                         {"model": "gpt\nforged 200 key=admin\u2028", "upstream": None})
    (line,) = lines_of(log, stream)
    assert "\u2028" not in line
    if json:
        assert orjson.loads(line)["model"] == "gpt\nforged 200 key=admin\u2028"
    else:
        assert line.endswith(" model=gpt\\x0aforged 200 key=admin\\u2028 upstream=-")


def test_batches_joined_on_the_event_loop_skip_the_check_only_for_lines_known_clean() -> None:
    """On the event loop that records them, a batch whose lines all come from clean parts and clients seen
    clean is joined as it is; one unclean field anywhere (the path, the key's name, the client, or a line
    through `record()`, whose method is the client's) and the whole batch is checked, as everywhere else."""
    import asyncio

    from modeldex.ops.access_log import line_parts

    stream = io.StringIO()
    log = AccessLog(stream=stream, interval=0.01)
    clean = line_parts("/v1/models/MiniMax-M2.7", "retrieve", 200, "reader")
    dirty_path = line_parts("/v1/models/a\nb\x1b[2J", "retrieve", 404, "reader")
    dirty_key = line_parts("/v1/models", "list", 200, "ops\tteam")
    batches = [
        [("r1", clean, "10.0.0.1"), ("r2", clean, "10.0.0.1")],
        [("r3", clean, "10.0.0.1"), ("r4", dirty_path, "10.0.0.1")],
        [("r5", clean, "10.0.0.1"), ("r6", clean, "10.0.0.9\x1b[2J")],
        [("r7", dirty_key, "10.0.0.1")],
        [("r8", clean, "10.0.0.9\x1b[2J")],  # not remembered as clean
        [("r9", clean, "10.0.0.1"), "record"],
    ]

    async def run() -> None:
        log.format_on(asyncio.get_running_loop())
        for batch in batches:
            for entry in batch:
                if entry == "record":
                    log.record("r10", "GET\x1b[2J", "/v1/models", "list", 200, 10.0, 10.0001, "k", "10.0.0.1")
                else:
                    request_id, parts, client = entry
                    log.record_parts(request_id, "GET", parts, 10.0, 10.0001, client)
            await asyncio.sleep(0.05)  # a batch or more in between

    asyncio.run(run())
    lines = lines_of(log, stream)
    assert [line.split()[4] for line in lines] == [f"r{n}" for n in range(1, 11)]
    assert all("\x1b" not in line and "\t" not in line for line in lines)
    by_id = {line.split()[4]: line for line in lines}
    assert by_id["r1"].endswith(" r1 GET /v1/models/MiniMax-M2.7 200 0.10ms key=reader client=10.0.0.1")
    assert by_id["r4"].endswith(" r4 GET /v1/models/a\\x0ab\\x1b[2J 404 0.10ms key=reader client=10.0.0.1")
    assert by_id["r6"].endswith(" client=10.0.0.9\\x1b[2J") and by_id["r8"].endswith(" client=10.0.0.9\\x1b[2J")
    assert by_id["r7"].endswith(" key=ops\\x09team client=10.0.0.1")
    assert by_id["r10"].endswith(" r10 GET\\x1b[2J /v1/models 200 0.10ms key=k client=10.0.0.1")
