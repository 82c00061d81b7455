r"""The access log: one line per request, text or JSON, written in batches.

A request appends its text line's pieces to a list at once (a JSON record: a tuple, to a deque); every
`interval` seconds the server's event loop joins the batch and checks it at once (a batch of lines known
clean, as a remembered answer's to a client seen before are, is only joined), and a thread of its own
writes it (a write may block, on a pipe to a slow reader); at shutdown, the rest. Making each line as it is
recorded keeps the request's strings in cache: in bench/run.sh the log cost 1–2 µs of CPU a request this
way, against 3–6 when a thread formatted 6,000-record batches of tuples. The batches are small (every 20
ms): the loop answers nothing while it joins one, and at 0.2 s a batch held ~10,000 lines, which took a
retrieve's p99 under load from 3.1 ms (without the log) to 5.8 ms; every 20 ms, 3.0 ms (bench/run.sh
--ceiling-only, 2026-12-01).

A line is made of ready-made strings: the time stamp is made once per millisecond, the duration and the
status are looked up in tables (a remembered answer's path, status and key once: `line_parts`), and the
clock is the one the request was timed with: 2,400 instructions a line as an f-string, against 7,900 for
%-formatting with `%d`, `%.2f` and a stamp found from `time.time()` (callgrind, in-process). Appended as
pieces and joined with the batch, a remembered retrieve's line costs 3,020 instructions as it is recorded
(bench/instructions.py; 3,560 as an f-string of the same pieces), 3,400–3,590 with the look at whether its
parts and client are known clean, and in the batch ~200 when they are, against ~2,000 for the batch's check
(callgrind over 1,000-line batches). The line names the caller, never its secret, and no header is logged.

Paths, methods and forwarded addresses come from clients: in text lines, a control character (a decoded
`%0A`, `%0D`, `%1B`) or any other non-printable one is written as an escape (`\x0a`), and so is a
backslash (`\\`), so a request can neither start a line of its own nor repaint a terminal. JSON lines are
escaped by orjson, and C1 controls and U+2028/U+2029 here.
"""

from __future__ import annotations

import asyncio
import math
import queue
import sys
import threading
import time
from collections import deque
from typing import TextIO

import orjson

LOGGER = "modeldex.access"
MAX_PATH = 256


# The text line (an inference line's); the path is cut to MAX_PATH characters.
_TEXT_LINE = f"%s INFO {LOGGER}: %s %s %.{MAX_PATH}s %d %.2fms key=%s client=%s"
_LEVEL_AND_LOGGER = f" INFO {LOGGER}: "
# Durations as `%.2f` writes them, by hundredths of a millisecond, up to 50 ms (0.3 MB a worker); a longer
# request is formatted. `%.2f` alone is 2,000 instructions: a quarter of what a line cost.
_TABULATED = 5000
# Table entries carry the text around them, so the line has fewer pieces to join (~300 instructions less).
_DURATIONS = tuple(f"{hundredths / 100:.2f}ms key=" for hundredths in range(_TABULATED))
_floor = math.floor
_STATUSES = tuple(f"{status} " for status in range(1000))  # a status has three digits (RFC 9110)
# A JSON record: time, request id, method, path, route, status, duration in ms, key, client.
JsonRecord = tuple[float, str, str, str, str, int, float, "str | None", "str | None"]


# What a line says between its method and its duration, the key's part, then the JSON record's path, route,
# status and key: made once for a remembered answer (api/model_routes.py), so its lines are eight pieces, not
# twelve, with no slice or lookup, from a call of six arguments, not nine (as an f-string, the log's share of
# a remembered retrieve went from 4,620 to 3,560 instructions: bench/instructions.py, the log minus none).
# Last, whether the two texts are clean (`_clean`): then a line of a known client needs no check (see `_tick`).
LineParts = tuple[str, str, str, str, int, "str | None", bool]
LINE_PIECES = 9  # a text line's pieces in the batch (`_record_text_parts`), its newline last
MAX_CLEAN_CLIENTS = 4096  # client addresses seen clean, kept to skip checking their lines

_UNSAFE_ASCII = bytes(range(0x20)) + b"\x7f\\"  # control characters, and the escape character itself


def _clean(text: str) -> bool:
    """Whether `text` may go into a text line as it is: printable ASCII, no backslash."""
    return text.isascii() and text.isprintable() and "\\" not in text


def _clean_block(text: str, lines: int) -> bool:
    """Whether a batch's text of `lines` lines, each ended by a newline, is clean: ASCII (isascii() is O(1)
    for a str) and its only unsafe bytes the lines' own newlines."""
    if not text.isascii():
        return False
    encoded = text.encode()
    return len(encoded) - len(encoded.translate(None, _UNSAFE_ASCII)) == lines


def line_parts(path: str, route: str, status: int, key_name: str | None) -> LineParts:
    middle, key_part = f" {path[:MAX_PATH]} {_STATUSES[status]}", f"{key_name or '-'} client="
    return middle, key_part, path, route, status, key_name, _clean(middle + key_part)


_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in (*range(0x80, 0xA0), 0x2028, 0x2029)}


def _escaped(text: str) -> str:
    r"""`text` with non-printable characters as `\xNN`, `\uNNNN` or `\UNNNNNNNN`, and `\` as `\\`."""
    return "".join(ch if ch.isprintable() and ch != "\\" else "\\\\" if ch == "\\"
                   else f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}" if ord(ch) < 0x10000
                   else f"\\U{ord(ch):08x}" for ch in text)


class _Stamps(dict[int, str]):
    """A millisecond's local time stamp (`2026-11-30 15:13:09,123`, as the logging module writes it),
    made on first use: at tens of thousands of requests a second, lines share it (0.48 µs a line
    against 0.61 formatting the milliseconds each time, measured)."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds: dict[int, str] = {}

    def __missing__(self, millisecond: int) -> str:
        second, rest = divmod(millisecond, 1000)
        text = self._seconds.get(second)
        if text is None:
            if len(self._seconds) > 64:
                self._seconds.clear()
            text = self._seconds[second] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        if len(self) > 4096:
            self.clear()
        stamp = self[millisecond] = f"{text},{rest:03d}"
        return stamp


class AccessLog:
    def __init__(self, json: bool = False, stream: TextIO | None = None, interval: float = 0.02) -> None:
        self.json = json
        self._stream = stream or sys.stderr
        self._interval = interval
        # A text line is appended as its pieces, newline last, by one list.extend (atomic, as the taking
        # below relies on): a tuple of pieces costs ~600 instructions a line less than an f-string of them
        # (bench/instructions.py), and a batch is then one join. JSON records are tuples, in a deque.
        self._pieces: list[str] = []
        # Whether a line since the last batch may be unclean. Read only where the lines are made (`_tick`, on
        # the event loop that records them): elsewhere a batch is always checked.
        self._unchecked = False
        self._clean_clients: set[str | None] = set()
        self._records: deque[JsonRecord] = deque()
        self._inference: deque[tuple[float, str, str, str, int, float, str | None, str | None,
                                     dict[str, object]]] = deque()
        self._lock = threading.Lock()
        self._stamps = _Stamps()  # used where records are made: on the event loop
        # Wall-clock time minus the request clock (time.perf_counter()), refreshed with every batch: a line's
        # time stamp comes from the time its request was timed with, not from a clock read of its own.
        self._wall_offset = time.time() - time.perf_counter()
        # The current millisecond's stamp, the level and logger after it, and the request-clock time at which
        # the next millisecond starts.
        self._stamp, self._stamp_until = "", 0.0
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()  # formatted text for the thread
        self.record = self._record_json if json else self._record_text
        # A line from parts made beforehand (`line_parts`): a remembered answer's.
        self.record_parts = self._record_json_parts if json else self._record_text_parts
        self._thread = threading.Thread(target=self._run, name="modeldex-access-log", daemon=True)
        self._thread.start()

    # deque.append and popleft are atomic: no lock on the request path, and no record lost to a flush.
    # `started` and `ended` are time.perf_counter() readings: when the request came, and when it was answered.
    def _record_text(self, request_id: str, method: str, path: str, route: str, status: int, started: float,
                     ended: float, key_name: str | None, client: str | None) -> None:
        self._record_text_parts(request_id, method, line_parts(path, route, status, key_name), started, ended, client)
        self._unchecked = True  # its method is the client's: such lines are always checked

    def _record_text_parts(self, request_id: str, method: str, parts: LineParts, started: float, ended: float,
                           client: str | None) -> None:
        # `record_parts` is called with a method the caller has checked (a remembered answer's: GET or HEAD),
        # so its line is clean when its parts and client are; checking the method here as well, in a
        # frozenset, cost 435 instructions a line (bench/instructions.py). `_record_text`'s lines are checked.
        if ended >= self._stamp_until:
            self._restamp(ended)
        # floor(), not int(): a builtin function's call is specialised, int's is not (38 ns against 71 for the
        # lookup, timeit). The index is >= 0: the clock is monotonic, so `ended` >= `started`.
        try:  # no comparisons: a try costs nothing until it catches (a request over 50 ms)
            duration = _DURATIONS[_floor((ended - started) * 100000.0 + 0.5)]
        except IndexError:
            duration = f"{(ended - started) * 1000:.2f}ms key="
        # Each piece ends with the text that follows it in the line.
        self._pieces.extend((self._stamp, request_id, " ", method, parts[0], duration, parts[1], client or "-", "\n"))
        if not (parts[6] and client in self._clean_clients):
            self._note_client(client, parts)

    def _note_client(self, client: str | None, parts: LineParts) -> None:
        """After a line whose parts or client are not known clean: remember a clean client, or have the
        batch checked."""
        if not parts[6] or (client is not None and not _clean(client)):
            self._unchecked = True
        else:  # None too: its line says "-"
            if len(self._clean_clients) >= MAX_CLEAN_CLIENTS:
                self._clean_clients.clear()
            self._clean_clients.add(client)

    def _restamp(self, ended: float) -> None:
        """The stamp of the millisecond `ended` (request clock) falls in, and when that millisecond ends."""
        offset = self._wall_offset
        millisecond = int((ended + offset) * 1000)
        self._stamp = self._stamps[millisecond] + _LEVEL_AND_LOGGER
        self._stamp_until = (millisecond + 1) / 1000 - offset

    def _record_json(self, request_id: str, method: str, path: str, route: str, status: int, started: float,
                     ended: float, key_name: str | None, client: str | None) -> None:
        self._records.append((ended + self._wall_offset, request_id, method, path, route, status,
                              (ended - started) * 1000, key_name, client))

    def _record_json_parts(self, request_id: str, method: str, parts: LineParts, started: float, ended: float,
                           client: str | None) -> None:
        _, _, path, route, status, key_name, _ = parts
        self._record_json(request_id, method, path, route, status, started, ended, key_name, client)

    def record_inference(self, request_id: str, path: str, status: int, duration_ms: float, key_name: str | None,
                         client: str | None, fields: dict[str, object]) -> None:
        """An inference request's line: the common fields, and what the gateway did (model asked, upstream
        and its model id, time to first byte, tokens)."""
        now = time.time()
        self._inference.append((now, self._stamps[int(now * 1000)], request_id, path, status, duration_ms, key_name,
                                client, fields))

    def _inference_lines(self) -> list[str]:
        lines = []
        for _ in range(len(self._inference)):
            now, stamp, request_id, path, status, duration_ms, key_name, client, fields = self._inference.popleft()
            if self.json:
                lines.append(orjson.dumps({
                    "ts": now, "level": "info", "logger": LOGGER, "request_id": request_id, "method": "POST",
                    "path": path[:MAX_PATH], "route": "inference", "status": status,
                    "duration_ms": round(duration_ms, 3), "key": key_name, "client": client, **fields}).decode())
            else:
                extra = " ".join(f"{name}={'-' if value is None else value}" for name, value in fields.items())
                lines.append(_TEXT_LINE % (stamp, request_id, "POST", path, status,
                                           duration_ms, key_name or "-", client or "-") + " " + extra)
        return lines

    def _json_lines(self, records: list[JsonRecord]) -> list[str]:
        return [orjson.dumps({
            "ts": now, "level": "info", "logger": LOGGER, "request_id": request_id, "method": method,
            "path": path[:MAX_PATH], "route": route, "status": status, "duration_ms": round(duration_ms, 3),
            "key": key_name, "client": client,
        }).decode() for now, request_id, method, path, route, status, duration_ms, key_name, client in records]

    @staticmethod
    def _json_block(lines: list[str]) -> str:
        """The batch's lines, each ended by a newline. orjson escapes C0 controls; C1 ones (U+0085 is a line
        break to many readers, U+009B starts a terminal escape) and U+2028/U+2029 are valid JSON as they
        are, so they are escaped here. isascii() is O(1) for a str: nothing for ordinary lines."""
        return "".join((line if line.isascii() else line.translate(_JSON_ESCAPES)) + "\n" for line in lines)

    @staticmethod
    def _text_block(lines: list[str]) -> str:
        """The batch's lines, each ended by a newline. Clean when ASCII (isascii() is O(1) for a str) and its
        only control characters are the newlines between lines: a path, forwarded address or caller's name
        cannot then start a line or repaint a terminal (0.05 µs a line, against 0.33 checking each). Else
        each unclean line is escaped whole: what modeldex itself writes in a line is printable ASCII."""
        text = "\n".join(lines) + "\n"
        if _clean_block(text, len(lines)):
            return text
        return "".join((line if line.isprintable() and "\\" not in line else _escaped(line)) + "\n" for line in lines)

    @classmethod
    def _pieces_block(cls, pieces: list[str]) -> str:
        """`_text_block` for lines given as their pieces (LINE_PIECES a line, a newline last): one join when
        clean, the same check; else the lines are put together and go through `_text_block`."""
        text = "".join(pieces)
        if _clean_block(text, len(pieces) // LINE_PIECES):
            return text
        return cls._text_block(["".join(pieces[start:start + LINE_PIECES - 1])
                                for start in range(0, len(pieces), LINE_PIECES)])

    def _pending_text(self, on_the_loop: bool = False) -> str:
        """Every record so far, formatted (and taken off the queues). `on_the_loop`: called on the event loop
        that makes the records, so no line is recorded meanwhile: a batch of lines that are all known clean
        (from clean parts and clients seen clean) is then joined without the check, ~2,000 instructions a
        line fewer (callgrind over 1,000-line batches)."""
        self._wall_offset = time.time() - time.perf_counter()  # the wall clock may have been set meanwhile
        with self._lock:  # one formatter at a time (the loop or the thread, and close())
            if self.json:
                records = self._records
                lines = self._json_lines([records.popleft() for _ in range(len(records))])
                lines += self._inference_lines()  # their model field comes from the request's body
                return self._json_block(lines) if lines else ""
            # Lines recorded meanwhile (each one extend, at the end) stay for the next batch.
            pieces = self._pieces
            taken = len(pieces)
            batch = pieces[:taken]
            del pieces[:taken]
            checked = self._unchecked or not on_the_loop
            if on_the_loop:  # reset only here, where lines are made: a flush elsewhere cannot clear a new line's flag
                self._unchecked = False
            inference = self._inference_lines()  # checked the same way: the model field comes from the body
            block = "" if not batch else self._pieces_block(batch) if checked else "".join(batch)
            return block + (self._text_block(inference) if inference else "")

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()

    def flush(self) -> None:
        """Format and write what is pending, here and now."""
        text = self._pending_text()
        if text:
            self._write(text)

    def format_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Join and check batches on the server's event loop every `interval`, where the records are made,
        leaving the thread only the write (which may block, on a pipe to a slow reader)."""
        self._loop = loop
        self._tick_handle = loop.call_later(self._interval, self._tick)

    def _tick(self) -> None:
        text = self._pending_text(on_the_loop=True)
        if text:
            self._outbox.put(text)
        if not self._stop.is_set() and self._loop is not None:
            self._tick_handle = self._loop.call_later(self._interval, self._tick)

    def _run(self) -> None:
        while True:
            try:  # with an event loop to format on, each batch arrives here: no need to wake up to look
                text = self._outbox.get(timeout=self._interval if self._loop is None else None)
            except queue.Empty:
                text = ""
            if text is None:  # close()
                return
            if self._loop is None:  # no event loop to format on (in-process uses): format here
                text += self._pending_text()
            if text:
                self._write(text)

    def close(self) -> None:
        """Write everything recorded; the event loop may have stopped already."""
        self._stop.set()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self._outbox.put(None)
        self._thread.join(timeout=2)
        self.flush()
