"""Issuers: identity providers whose tokens (JWTs) modeldex accepts beside its own API keys.

An issuer is configuration, like an upstream: it lives in the catalog, goes through the change feed and
catalog files, and every server knows the issuers of the catalog version it serves without a database
read. How tokens are checked against it is `modeldex.identity`'s business; here are only the rules its
fields follow. The signing algorithm is part of the configuration, never taken from a token.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import AfterValidator, Field, ValidationInfo, model_validator

from modeldex.catalog.entities import Entity, Name, read_back
from modeldex.catalog.limits import parse_limit

# Asymmetric algorithms only: an HMAC "signed" with a public key is a known attack, and `none` is none.
Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
ALGORITHMS: tuple[str, ...] = Algorithm.__args__  # type: ignore[attr-defined]
MAX_LEEWAY_S = 600
MAX_PUBLIC_KEY_LENGTH = 16_000
_CLAIM_LENGTH = 128


def _url(value: str) -> str:
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ValueError("must not contain credentials or a fragment")
    if not value.isprintable() or any(ch.isspace() for ch in value):
        raise ValueError("must not contain spaces or control characters")
    return value  # kept as written: an issuer URL is compared with `iss` exactly


def _claim(value: str) -> str:
    if not value or len(value) > _CLAIM_LENGTH or not value.isprintable() or " " in value:
        raise ValueError(f"must be a claim name of 1 to {_CLAIM_LENGTH} printable characters (a dotted path "
                         "such as realm_access.roles reaches into nested claims)")
    return value


def _value(value: str) -> str:
    if not value or len(value) > 256 or not value.isprintable():
        raise ValueError("must be 1 to 256 printable characters")
    return value


def _public_key(value: str) -> str:
    text = value.strip()
    if not text.startswith("-----BEGIN PUBLIC KEY-----") or not text.endswith("-----END PUBLIC KEY-----"):
        raise ValueError("must be a PEM public key (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)")
    try:
        key = load_pem_public_key(text.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("is not a public key cryptography can read") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        raise ValueError("must be an RSA, EC or Ed25519/Ed448 public key")  # noqa: TRY004  (pydantic reports ValueErrors)
    return text + "\n"


def _rate_limit(value: str) -> str:
    parse_limit(value)  # a ValueError names what is wrong
    return value.strip()


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


Url = Annotated[str, AfterValidator(_url)]
Claim = Annotated[str, AfterValidator(_claim)]
ClaimValue = Annotated[str, AfterValidator(_value)]


class Issuer(Entity):
    """A trusted identity provider. Its keys come from `jwks_url`, a `public_key`, or (neither given) the
    `jwks_uri` of its OpenID Connect discovery document at `{issuer}/.well-known/openid-configuration`."""

    name: Name
    issuer: Url  # what tokens' `iss` must be, exactly
    jwks_url: Url | None = None
    public_key: Annotated[str, Field(max_length=MAX_PUBLIC_KEY_LENGTH), AfterValidator(_public_key)] | None = None
    audiences: Annotated[tuple[ClaimValue, ...], Field(min_length=1, max_length=16), AfterValidator(_unique)]
    algorithms: Annotated[tuple[Algorithm, ...], Field(min_length=1), AfterValidator(_unique)] = ("RS256",)
    leeway: Annotated[int, Field(ge=0, le=MAX_LEEWAY_S, strict=True)] = 60  # seconds of clock skew forgiven
    subject_claim: Claim = "sub"  # names the caller: logs, rate limits, the change feed's actor
    groups_claim: Claim = "groups"  # its values that name modeldex groups make the access policy
    admin_value: ClaimValue | None = None  # a groups-claim value that grants the admin scope
    default_group: Name | None = None  # the policy of tokens naming no group; None: all models
    rate_limit: Annotated[str, AfterValidator(_rate_limit)] | None = None  # per subject; None: server's default

    @model_validator(mode="after")
    def _one_key_source(self, info: ValidationInfo) -> Issuer:
        if self.jwks_url is not None and self.public_key is not None:
            raise ValueError("give jwks_url or public_key, not both (neither: OpenID Connect discovery)")
        if self.public_key is not None and not read_back(info):  # (one stored before this rule still loads)
            signs = algorithms_of(load_pem_public_key(self.public_key.encode()))
            if not set(signs) & set(self.algorithms):
                raise ValueError(f"the public key verifies {', '.join(signs) or 'no algorithm modeldex accepts'}, "
                                 f"not {', '.join(self.algorithms)}: every token would be refused"
                                 + (f" (algorithms must include {' or '.join(signs)})" if signs else ""))
        return self


def algorithms_of(key: object) -> tuple[str, ...]:
    """The algorithms (of ALGORITHMS) a public key verifies: an issuer whose static key verifies none of its
    algorithms refused every token, and said so only in the log, token by token."""
    if isinstance(key, rsa.RSAPublicKey):
        return tuple(a for a in ALGORITHMS if a.startswith(("RS", "PS")))
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": ("ES256",), "secp384r1": ("ES384",)}.get(key.curve.name, ())
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    return ()
