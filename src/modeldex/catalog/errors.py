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


class NotFound(CatalogError):
    def __init__(self, kind: str, key: str) -> None:
        message = f"no active key named {key!r}" if kind == "key" else f"{kind} {key!r} does not exist"
        super().__init__(message)
        self.kind = kind
        self.key = key


class AlreadyExists(CatalogError):
    def __init__(self, kind: str, key: str) -> None:
        what = "an active key named" if kind == "key" else kind
        super().__init__(f"{what} {key!r} already exists")
        self.kind = kind
        self.key = key


class Conflict(CatalogError):
    """The change is valid on its own but not with the rest of the catalog (e.g. a model that aliases
    point to)."""


class PreconditionFailed(CatalogError):
    """An If-Match revision is stale: someone else changed the entity first."""

    def __init__(self, kind: str, key: str, expected: int, current: int) -> None:
        super().__init__(
            f"{kind} {key!r} is at revision {current}, not {expected}: it changed since you read it" if expected >= 0
            else f"{kind} {key!r} is at revision {current}; If-Match names no revision (send the ETag, e.g. "
                 f'"{current}")')
        self.kind = kind
        self.key = key
        self.current = current


class PlanChanged(CatalogError):
    """A catalog file applied on the strength of a preview would now make other changes than those shown
    (someone, or a discovery poll, wrote in between): nothing is applied."""

    def __init__(self) -> None:
        super().__init__("the catalog changed since the preview: applying the file now would make other changes "
                         "than those shown; preview it again")


class StoreError(Exception):
    """The catalog's storage cannot be used as it is (unreachable, wrong schema version, ...)."""


class StoreUnavailable(StoreError):
    """The catalog's storage cannot be reached right now: reads are served from memory, and the operation
    may succeed later (the API answers 503 with Retry-After)."""
