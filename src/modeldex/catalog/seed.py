"""The models a new catalog starts with, read from the data file shipped in the package, and the built-in
upstream that serves them (`builtin_routes`)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml

from modeldex.catalog.entities import Model, new_model, parse
from modeldex.catalog.upstreams import Upstream

SEED_FILE = "minimax.yaml"


def _seed_document() -> dict[str, Any]:
    text = resources.files("modeldex.catalog").joinpath("data", SEED_FILE).read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@functools.cache
def builtin_routes() -> tuple[dict[str, Upstream], dict[str, str]]:
    """The built-in upstreams by name, and the seed's model ids with the upstream each routes to.

    Built in, not stored: the seeded models route there as long as they have no routes of their own, and
    an upstream the operator stores under the same name replaces the built-in one (MiniMax's global
    endpoint, say). Kept out of the stored catalog so that lists, exports and catalog files stay the
    operator's own."""
    document = _seed_document()
    upstreams = {entry["name"]: parse(Upstream, entry) for entry in document.get("upstreams", ())}
    models = {entry["id"]: entry["routes_to"] for entry in document["models"] if "routes_to" in entry}
    return upstreams, models


def seed_models() -> list[Model]:
    document = _seed_document()
    return [
        new_model(entry["id"], owned_by=entry["owned_by"], created=entry["created"])
        for entry in document["models"]
    ]
