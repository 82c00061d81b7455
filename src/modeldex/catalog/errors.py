"""Domain errors. The API and the CLI each turn these into their own kind of message."""

from __future__ import annotations


class CatalogError(Exception):
    """Base for every error the catalog raises on purpose."""


class InvalidInput(CatalogError):
    """A value was rejected; `field` names which one."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ModelNotFound(CatalogError):
    def __init__(self, model_id: str) -> None:
        super().__init__(f"model {model_id!r} does not exist")
        self.model_id = model_id


class ModelAlreadyExists(CatalogError):
    def __init__(self, model_id: str) -> None:
        super().__init__(f"model {model_id!r} already exists")
        self.model_id = model_id


class KeyNotFound(CatalogError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no active key named {name!r}")
        self.name = name


class KeyNameTaken(CatalogError):
    def __init__(self, name: str) -> None:
        super().__init__(f"an active key named {name!r} already exists")
        self.name = name
