"""URL paths as clients send them: dot segments removed, model ids percent-decoded exactly once.

Routing works on the raw path, because a model id may contain `/`: the openai SDK sends
`meta-llama%2FLlama-3.1-8B-Instruct`, curl sends `meta-llama/Llama-3.1-8B-Instruct`, and both name the
same model. Dot segments (`.`, `..`, and their encoded forms) are resolved first, as RFC 3986 says, so
`/v1/models/../../admin` is `/admin` and can never reach a model route.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

_SINGLE_DOT = frozenset({".", "%2e"})
_DOUBLE_DOT = frozenset({"..", ".%2e", "%2e.", "%2e%2e"})


def _has_dot_segment(path: str) -> bool:
    return "/." in path or "%2e" in path or "%2E" in path


def normalize(raw_path: str) -> str:
    """RFC 3986 remove_dot_segments on a raw (still percent-encoded) absolute path."""
    if not _has_dot_segment(raw_path):
        return raw_path
    segments = raw_path.split("/")[1:]
    output: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        lowered = segment.lower()
        if lowered in _SINGLE_DOT:
            if last:
                output.append("")
        elif lowered in _DOUBLE_DOT:
            if output:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


def decode_id(raw: str) -> str:
    """Percent-decode a path remainder into a model id.

    Bytes that are not UTF-8 become U+FFFD, which no stored id contains, so such a request is a 404.
    """
    if "%" not in raw and raw.isascii():
        return raw
    return unquote_to_bytes(raw.encode("latin-1")).decode("utf-8", errors="replace")
