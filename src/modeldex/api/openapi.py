"""The OpenAPI document, loaded from the data file beside this module."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson
import yaml

from modeldex import __version__


def openapi_document() -> dict[str, Any]:
    text = resources.files("modeldex.api").joinpath("openapi.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    document["info"]["version"] = __version__
    return document


@cache
def openapi_json() -> bytes:
    return orjson.dumps(openapi_document())
