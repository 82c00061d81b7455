"""URL paths as the server hands them over: percent-decoded once, dot segments still in.

granian decodes the path before the app sees it, so a model id may contain `/`: the openai SDK sends
`meta-llama%2FLlama-3.1-8B-Instruct`, curl sends `meta-llama/Llama-3.1-8B-Instruct`, and both name the
same model. Dot segments are resolved as RFC 3986 says, so `/v1/models/../../admin` is `/admin` and
can never reach a model route; since the path is decoded, `%2e%2e` is a dot segment too.
"""

from __future__ import annotations


def normalize(path: str) -> str:
    """RFC 3986 remove_dot_segments on a decoded absolute path."""
    if "/." not in path:
        return path
    segments = path.split("/")[1:]
    output: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)
