"""The models a new catalog starts with, read from the data file shipped in the package."""

from __future__ import annotations

from importlib import resources

import yaml

from modeldex.catalog.entities import Model, new_model

SEED_FILE = "minimax.yaml"


def seed_models() -> list[Model]:
    text = resources.files("modeldex.catalog").joinpath("data", SEED_FILE).read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    return [
        new_model(entry["id"], owned_by=entry["owned_by"], created=entry["created"])
        for entry in document["models"]
    ]
