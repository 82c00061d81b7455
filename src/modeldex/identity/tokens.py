"""Checking a token against an issuer's configuration, and what its claims make of the caller.

The algorithm is the issuer's, never the token's: a header saying `none`, or `HS256` (an HMAC "signed"
with the public key, which anyone has), names no algorithm the issuer accepts (they are all asymmetric:
catalog/issuers.py) and is refused before any key is touched.
"""

from __future__ import annotations

import binascii
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from jwt.utils import base64url_decode

from modeldex.catalog.callers import Scope
from modeldex.catalog.issuers import Issuer
from modeldex.catalog.policy import ALL_MODELS, AccessPolicy
from modeldex.identity.keysets import KeySet

# Real tokens are a few hundred bytes to a few KB (Entra ID with many groups: ~4 KB); anything much
# larger is refused before it is decoded, so a 1 MB "token" costs a length check.
MAX_TOKEN_LENGTH = 16_384
MAX_SUBJECT_LENGTH = 256


def shown(value: Any) -> str:
    """A value from a token as a log line may quote it: short (the token is the sender's to fill)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Refused(Exception):
    """Why a token is not accepted: for the log (never for the client, who gets a plain 401).
    `refreshable`: a key-set refresh might change the answer (unknown `kid`, no keys yet)."""

    def __init__(self, reason: str, refreshable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refreshable = refreshable


@dataclass(frozen=True, slots=True)
class Unverified:
    """A token's header and claims as it states them: only for choosing the issuer and key to check it."""

    header: dict[str, Any]
    claims: dict[str, Any]

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def looks_like_jwt(token: str) -> bool:
    """Cheap: three dot-separated parts. Anything else is no token of ours (an opaque key, say)."""
    return token.count(".") == 2


def peek(token: str) -> Unverified:
    if len(token) > MAX_TOKEN_LENGTH:
        raise Refused(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise Refused("not a JWT")
    try:
        header = orjson.loads(base64url_decode(parts[0]))
        claims = orjson.loads(base64url_decode(parts[1]))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise Refused("not a JWT (its header or payload is not base64url JSON)") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise Refused("not a JWT (its header or payload is not a JSON object)")
    return Unverified(header, claims)


def verify(token: str, peeked: Unverified, issuer: Issuer, keyset: KeySet | None) -> dict[str, Any]:
    """The token's claims, once signature, `iss`, `aud`, `exp`, `nbf` and `iat` check out; else Refused."""
    algorithm = peeked.header.get("alg")
    if algorithm not in issuer.algorithms:
        raise Refused(f"algorithm {shown(algorithm)} is not one issuer {issuer.name!r} accepts "
                      f"({', '.join(issuer.algorithms)})")
    if peeked.header.get("crit") is not None:
        raise Refused("the token has critical header extensions modeldex does not know")
    if another_kind(peeked.header.get("typ")):
        raise Refused(f"the token's typ {shown(peeked.header.get('typ'))} says it is not an access token")
    if keyset is None:
        raise Refused(f"issuer {issuer.name!r}: no keys fetched yet", refreshable=True)
    key = keyset.find(peeked.kid, algorithm)
    if key is None:
        named = keyset.named(peeked.kid)
        if not named:
            raise Refused(f"issuer {issuer.name!r}: no key with kid {shown(peeked.kid)} in its key set",
                          refreshable=True)
        suitable = [k for k in named if k.suits(algorithm)]
        if suitable:  # several keys and no `kid` to choose: no refresh would tell
            raise Refused(f"issuer {issuer.name!r}: the token names no kid, and its key set holds several "
                          f"keys for {algorithm}")
        if len(named) == 1 and named[0].algorithm is not None and named[0].algorithm != algorithm:
            raise Refused(f"key {named[0].kid!r} is for {named[0].algorithm}, the token says {algorithm}")
        # A JWK without `alg` (or a static key): its type must suit the algorithm.
        raise Refused(f"key {named[0].kid!r} is not a key for {algorithm}" if len(named) == 1 else
                      f"issuer {issuer.name!r}: no key {'' if peeked.kid is None else f'with kid {shown(peeked.kid)} '}"
                      f"is for {algorithm}")
    try:
        return jwt.decode(token, key.key, algorithms=[algorithm], audience=list(issuer.audiences),
                          issuer=issuer.issuer, leeway=issuer.leeway,
                          options={"require": ["exp", "iss", "aud"]})
    except jwt.ExpiredSignatureError:
        raise Refused("expired") from None
    except jwt.ImmatureSignatureError as exc:
        raise Refused(f"not yet valid ({exc})") from None
    except jwt.InvalidAudienceError:
        raise Refused(f"wrong audience (issuer {issuer.name!r} accepts {', '.join(issuer.audiences)})") from None
    except jwt.InvalidIssuerError:
        raise Refused(f"wrong issuer (expected {issuer.issuer})") from None
    except jwt.InvalidSignatureError:
        raise Refused("the signature does not verify") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Refused(f"the token has no {exc.claim!r} claim") from None
    except (jwt.InvalidKeyError, jwt.InvalidAlgorithmError):
        raise Refused(f"key {key.kid!r} does not fit algorithm {algorithm}") from None
    except (jwt.PyJWTError, TypeError, ValueError) as exc:
        raise Refused(f"invalid token ({type(exc).__name__})") from None


def another_kind(typ: Any) -> bool:
    """Whether a `typ` header says the token is another kind of JWT than an access token: a logout token
    (`logout+jwt`), a security event (`secevent+jwt`), a DPoP proof, ... which the provider signs with the
    same keys, sometimes for the same audience (RFC 8725, 3.11: explicit typing keeps them apart). Access
    tokens say `at+jwt` (RFC 9068), `JWT`, or nothing (Keycloak, Entra ID, Kubernetes): those pass."""
    if not isinstance(typ, str):
        return False
    media = typ.lower().removeprefix("application/")
    return media.endswith("+jwt") and media != "at+jwt"


def claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by name, or by dotted path into nested objects (Keycloak: `realm_access.roles`), where a
    name may itself hold dots (Kubernetes: `kubernetes.io.namespace` is `namespace` in `kubernetes.io`)."""
    if path in claims:
        return claims[path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest name first
        inner = claims.get(".".join(parts[:cut]))
        if isinstance(inner, dict):
            return claim(inner, ".".join(parts[cut:]))
    return None


def subject(claims: dict[str, Any], issuer: Issuer) -> str:
    value = claim(claims, issuer.subject_claim)
    if not isinstance(value, str) or not value or len(value) > MAX_SUBJECT_LENGTH or not value.isprintable():
        raise Refused(f"the {issuer.subject_claim!r} claim is missing or not a short printable string")
    return value


def group_values(claims: dict[str, Any], issuer: Issuer) -> list[str]:
    """The groups claim's values: a list of strings, or one string (space-separated, like `scope`)."""
    value = claim(claims, issuer.groups_claim)
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def scope_and_policy(values: list[str], issuer: Issuer, groups: Collection[str]) -> tuple[Scope, AccessPolicy]:
    """The admin scope for the admin value; the policy of the values that name modeldex groups, else the
    issuer's default group, else all models."""
    scope = Scope.ADMIN if issuer.admin_value is not None and issuer.admin_value in values else Scope.READ
    named = sorted({value for value in values if value in groups})
    if named:
        return scope, AccessPolicy(all=False, groups=tuple(named))
    if issuer.default_group is not None:
        return scope, AccessPolicy(all=False, groups=(issuer.default_group,))
    return scope, ALL_MODELS
