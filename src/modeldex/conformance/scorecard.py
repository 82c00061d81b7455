"""Running the checks and showing the result: a scorecard for people, or JSON for scripts."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx

from modeldex.conformance.checks import CHECKS, Context, Result
from modeldex.conformance.probe import Probe

MARKS = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "skip": "SKIP"}


def run(probe: Probe, model: str | None = None, writes: bool = False) -> list[Result]:
    """Every check in order (later ones use what the list answered). A check that cannot reach the server
    fails with the reason; the others still run."""
    context = Context(probe, model=model, writes=writes)
    results = []
    for name, check in CHECKS:
        try:
            results.append(check(context))
        except httpx.HTTPError as exc:
            results.append(Result(name, "fail", f"{probe.base}", f"no answer: {type(exc).__name__}: {exc}",
                                  "a client gets no answer at all"))
        except Exception as exc:  # an answer no check foresaw: reported, and the others still run
            results.append(Result(name, "fail", f"{probe.base}", "an answer this check could not judge: "
                                  f"{type(exc).__name__}: {exc}", "clients that expect OpenAI's shapes may "
                                  "break on it too; if the answer looks right, this is modeldex check's bug"))
    return results


def counts(results: list[Result]) -> Counter[str]:
    return Counter(result.status for result in results)


def text(results: list[Result], base: str) -> str:
    lines = [f"modeldex check {base}", ""]
    for result in results:
        lines.append(f"{MARKS[result.status]}  {result.name}: {result.got}")
        if result.status in ("fail", "warn"):
            lines.append(f"      sent: {result.sent}")
            lines.append(f"      why:  {result.why}")
    tally = counts(results)
    lines += ["", ", ".join(f"{tally[status]} {status}" for status in ("pass", "fail", "warn", "skip"))]
    return "\n".join(lines)


def document(results: list[Result], base: str) -> dict[str, Any]:
    tally = counts(results)
    return {"url": base, "passed": tally["fail"] == 0, "counts": {s: tally[s] for s in MARKS},
            "checks": [result.document() for result in results]}
