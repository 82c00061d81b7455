"""Who is calling: what every route needs to know about the credential a request came with.

An API key is one kind of caller; tokens from an identity provider are another. Routes only ever see
a `Caller`, so a new kind of credential plugs in where callers are resolved (`api/callers.py`) and
nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from modeldex.catalog.limits import Limit, parse_limit
from modeldex.catalog.policy import AccessPolicy


class Scope(StrEnum):
    """What a caller may do: `read` lists and retrieves; `admin` may also change the catalog."""

    READ = "read"
    ADMIN = "admin"


def readable_limit(text: str | None) -> Limit | str | None:
    """A key's stored limit as a Limit (None: unlimited), or "default" for one out of bounds (stored before
    limits were checked, e.g. `5/0d`): such a key follows the server's default rather than failing."""
    try:
        return parse_limit(text)
    except ValueError:
        return "default"


@dataclass(frozen=True, slots=True)
class Caller:
    """The resolved identity of one request. Made once per catalog version for each API key, not per
    request."""

    name: str  # for logs, metrics and the change feed: never a secret
    scope: Scope
    policy: AccessPolicy  # which models it sees
    rate_limit: str | None  # its own limit ("600/m", "unlimited"); None: the server's default
    credential: str = "api_key"  # what kind of credential it came from
    # For credentials that lapse on their own (a token expires, its signing key goes): whether it still
    # stands, as far as anything but the catalog goes (whatever is remembered per caller is forgotten with
    # the catalog version anyway). None: it stands as long as the catalog version (an API key).
    still_valid: Callable[[], bool] | None = field(default=None, compare=False, repr=False)
    # Which credential of that name it is (an API key's lookup id, never a secret): a key made with a revoked
    # key's name draws from a bucket of its own, not from the one the revoked key emptied.
    instance: str | None = field(default=None, compare=False, repr=False)
    exempt: bool = field(init=False)  # its own limit is "unlimited": never counted, whatever the default

    def __post_init__(self) -> None:
        object.__setattr__(self, "exempt", self.rate_limit is not None and readable_limit(self.rate_limit) is None)

    @property
    def is_admin(self) -> bool:
        return self.scope is Scope.ADMIN

    @property
    def actor(self) -> str:
        """Who the change feed says made a change."""
        return f"key:{self.name}" if self.credential == "api_key" else f"{self.credential}:{self.name}"

    @property
    def bucket(self) -> str:
        """The rate-limit bucket it draws from (its limit is appended, so a changed limit starts afresh)."""
        return self.actor if self.instance is None else f"{self.actor}@{self.instance}"


class Credentials(Protocol):
    """One kind of credential: the caller a presented bearer token stands for, or None."""

    def caller(self, token: str) -> Caller | None: ...


class RefreshingCredentials(Credentials, Protocol):
    """Credentials whose answer may change after waiting for something (an identity provider's keys):
    asked again, off the fast path, for a token `caller` refused."""

    async def second_chance(self, token: str) -> Caller | None: ...
