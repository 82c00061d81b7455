"""The Python ceiling: granian running an RSGI handler that does no work, serving modeldex's answers.

Same server, interface, event loop and worker count as modeldex, the same status, body and response
headers per scenario (`/<scenario>`), but no key check, no lookup, no metrics: what is left of a request
when the application costs nothing. modeldex's distance to this is its own work; this one's distance
to nginx is granian and Python's.

Started by bench/baseline.py as `granian --interface rsgi noop_handler:app` with the answers in the file
named by NOOP_ANSWERS (JSON: {"/name": [status, [[header, value], ...], body as text]}).
"""

from __future__ import annotations

import json
import os
from typing import Any

_ANSWERS = {path: (status, [tuple(pair) for pair in headers], body.encode())
            for path, (status, headers, body) in json.loads(open(os.environ["NOOP_ANSWERS"]).read()).items()}
_MISSING = (404, [("content-type", "text/plain")], b"no such scenario")


class NoopHandler:
    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        status, headers, body = _ANSWERS.get(scope.path, _MISSING)
        if status == 304:
            protocol.response_empty(304, headers)
        else:
            protocol.response_bytes(status, headers, body)


app = NoopHandler()
