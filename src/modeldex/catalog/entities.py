"""Catalog entities: models, aliases and groups, with the rules their fields must follow.

Entities are immutable pydantic models, so one set of rules validates the admin API, the catalog file
and the CLI alike, and every rejection names the field it is about.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, WithJsonSchema

from modeldex.catalog.errors import InvalidInput

MAX_MODEL_ID_LENGTH = 256
MAX_OWNER_LENGTH = 128
# `?` and `#` would end the URL path; whitespace and control characters have no business in an id.
# U+FFFD is what undecodable request bytes turn into, so no real id may contain it.
_FORBIDDEN_ID_CHARS = frozenset("?#\ufffd") | frozenset(chr(c) for c in range(0x21)) | {"\x7f"}
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# The validation context of an entity read back from the store (`Model.model_validate(row, context=STORED)`):
# rules added to input after a catalog could hold what they refuse (ids in NFC, no NUL in free text) are not
# applied to it, or one such entity, stored by an earlier modeldex, stopped every server and command from
# loading the catalog. Entities without metadata are read back with no validation at all (`Model.stored`).
STORED = {"stored": True}


def read_back(info: ValidationInfo) -> bool:
    """Whether a validator runs on an entity read back from the store (the STORED context), where rules added
    after it was stored are not applied."""
    return bool(info.context and info.context.get("stored"))


def model_id_problem(model_id: str, stored: bool = False) -> str | None:
    """What is wrong with `model_id`, or None if it can be served and round-tripped through a URL path.

    Ids may contain `/`, `:` and `@` (`meta-llama/Llama-3.1-8B-Instruct`, `ft:gpt-4o:acme::x1`), but no
    path segment may be empty, `.` or `..`, so that no id can be confused with a different route.
    A `stored` id (read back from the store) need not be in NFC, which earlier modeldex did not require.
    """
    if not model_id:
        return "model id must not be empty"
    if len(model_id) > MAX_MODEL_ID_LENGTH:
        return f"model id is longer than {MAX_MODEL_ID_LENGTH} characters"
    bad = sorted({ch for ch in model_id if ch in _FORBIDDEN_ID_CHARS or not ch.isprintable()})
    if bad:
        return f"model id contains characters that are not allowed: {', '.join(repr(ch) for ch in bad)}"
    if any(segment in ("", ".", "..") for segment in model_id.split("/")):
        return "model id must not contain empty, '.' or '..' path segments"
    if not stored and not model_id.isascii() and not unicodedata.is_normalized("NFC", model_id):
        # Otherwise "é" and "e" + a combining accent would be two models that look the same.
        return "model id must be in Unicode normalization form NFC (é as one character, not e and an accent)"
    return None


def validate_model_id(model_id: str) -> str:
    problem = model_id_problem(model_id)
    if problem is not None:
        raise InvalidInput("id", f"id: {problem}")
    return model_id


def _model_id(value: str, info: ValidationInfo) -> str:
    problem = model_id_problem(value, stored=read_back(info))
    if problem is not None:
        raise ValueError(problem)
    return value


def _name(value: str) -> str:
    if not _NAME_PATTERN.fullmatch(value):
        raise ValueError("must be 1 to 64 characters: letters, digits, '.', '_', '@', '-', "
                         "starting with a letter or digit")
    return value


def _owner(value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_OWNER_LENGTH or not value.isprintable():
        raise ValueError(f"must be 1 to {MAX_OWNER_LENGTH} printable characters")
    return value


def _text(value: str, info: ValidationInfo) -> str:
    # PostgreSQL cannot store NUL in text, SQLite can: refused here, both databases behave the same.
    if "\x00" in value and not read_back(info):
        raise ValueError("must not contain NUL characters")
    return value


def _decimal_string(value: str) -> str:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError("must be a decimal number written as a string, e.g. \"0.000002\"") from None
    if not number.is_finite() or number < 0:
        raise ValueError("must be a finite, non-negative decimal")
    return value


def _pattern(value: str) -> str:
    if not value or len(value) > MAX_MODEL_ID_LENGTH or not value.isprintable() or " " in value:
        raise ValueError(f"must be 1 to {MAX_MODEL_ID_LENGTH} printable characters without spaces")
    return value


def _shutdown_date(value: str) -> str:
    try:
        shutdown_timestamp(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 date (2026-12-31) or date-time (2026-12-31T12:00:00Z)") from None
    return value


ModelId = Annotated[str, AfterValidator(_model_id)]
# Its JSON Schema (the admin API's OpenAPI document) states the rule, so clients can check a name first.
Name = Annotated[str, AfterValidator(_name),
                 WithJsonSchema({"type": "string", "pattern": f"^{_NAME_PATTERN.pattern}$"})]
Owner = Annotated[str, AfterValidator(_owner)]
DecimalString = Annotated[str, AfterValidator(_decimal_string)]
Pattern = Annotated[str, AfterValidator(_pattern)]
ShutdownDate = Annotated[str, AfterValidator(_shutdown_date)]
Text = Annotated[str, AfterValidator(_text)]  # free text: anything but NUL (other fields are stricter)
Modality = Literal["text", "image", "audio", "video", "file", "embeddings"]
Timestamp = Annotated[int, Field(ge=0, lt=2**53, strict=True)]


def shutdown_timestamp(value: str) -> float:
    """When a `shutdown_date` takes effect: a bare date means its first second, UTC."""
    text = value.strip()
    if len(text) == 10:
        day = dt.date.fromisoformat(text)
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


class Entity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_max_length=4000)

    def document(self) -> dict[str, Any]:
        """The entity as the admin API, the change feed and catalog files show it."""
        return self.model_dump(mode="json", exclude_none=True)


class Pricing(Entity):
    """Price per token, as decimal strings (OpenRouter's convention)."""

    prompt: DecimalString | None = None
    completion: DecimalString | None = None


MAX_ROUTES = 16
MAX_WEIGHT = 1000


class Route(Entity):
    """Where inference requests for a model go: an upstream (by name), the upstream's own id for the model
    (default: the catalog id), and a weight among the model's routes."""

    upstream: Name
    model: ModelId | None = None
    weight: Annotated[int, Field(ge=1, le=MAX_WEIGHT, strict=True)] = 1


def _routes(value: tuple[Route, ...]) -> tuple[Route, ...]:
    seen = set()
    for route in value:
        key = (route.upstream, route.model)
        if key in seen:
            raise ValueError(f"upstream {route.upstream!r} is named twice for the same upstream model")
        seen.add(key)
    return value


Routes = Annotated[tuple[Route, ...], Field(max_length=MAX_ROUTES), AfterValidator(_routes)]


class Model(Entity):
    """One catalog entry. `id`, `object`, `created`, `owned_by` are what the Models API always answers;
    the rest is optional metadata, answered on request."""

    id: ModelId
    created: Timestamp = Field(default_factory=lambda: int(time.time()))
    owned_by: Owner = "system"
    name: Annotated[str, Field(max_length=200), AfterValidator(_text)] | None = None
    description: Text | None = None
    context_length: Annotated[int, Field(gt=0, lt=2**53, strict=True)] | None = None
    max_output_tokens: Annotated[int, Field(gt=0, lt=2**53, strict=True)] | None = None
    input_modalities: tuple[Modality, ...] | None = None
    output_modalities: tuple[Modality, ...] | None = None
    pricing: Pricing | None = None
    shutdown_date: ShutdownDate | None = None
    replaced_by: ModelId | None = None
    # Where inference requests go (operator-defined models); a discovered model goes to its `source`.
    routes: Routes | None = None
    # Set by discovery only: the upstream a model came from, and since when it has not confirmed it.
    source: Name | None = None
    stale_since: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None

    def shutdown_at(self) -> float | None:
        return None if self.shutdown_date is None else shutdown_timestamp(self.shutdown_date)

    def metadata(self) -> dict[str, Any]:
        """The optional fields that are set, as stored and exported."""
        return self.model_dump(mode="json", exclude_none=True,
                               exclude={"id", "created", "owned_by", "source", "stale_since"})

    @classmethod
    def stored(cls, id: str, created: int, owned_by: str, source: str | None, stale_since: float | None) -> Model:
        """A model without metadata read back from the store, whose fields were validated on the way in.

        What `model_construct` makes, without its per-field default handling: a full load of 100,000
        models spends 0.3 s less (measured), a good part of a server's startup."""
        if not _PLAIN_CONSTRUCTION:
            return cls.model_construct(id=id, created=created, owned_by=owned_by, source=source,
                                       stale_since=stale_since)
        model = cls.__new__(cls)
        fields = dict(_UNSET_METADATA)
        fields.update(id=id, created=created, owned_by=owned_by, source=source, stale_since=stale_since)
        object.__setattr__(model, "__dict__", fields)
        object.__setattr__(model, "__pydantic_fields_set__", {"id", "created", "owned_by", "source", "stale_since"})
        object.__setattr__(model, "__pydantic_extra__", None)
        object.__setattr__(model, "__pydantic_private__", None)
        return model


# Model.stored sets the instance attributes that model_construct sets, which is all there is to a
# Model as long as it has no private attributes and no post-init hook (checked, not assumed).
_UNSET_METADATA: dict[str, Any] = dict.fromkeys(Model.model_fields)
_PLAIN_CONSTRUCTION = (not Model.__private_attributes__ and not Model.__pydantic_post_init__
                       and all(field.default is None for name, field in Model.model_fields.items()
                               if name not in ("id", "created", "owned_by", "source", "stale_since")))

# Fields only discovery sets; an operator's input naming them is refused.
DISCOVERY_FIELDS = ("source", "stale_since")


class Alias(Entity):
    """Another name for a model: `MiniMax-latest` -> `MiniMax-M3`."""

    id: ModelId
    target: ModelId
    hidden: bool = False


class Group(Entity):
    """A named set of models: exact ids or glob patterns (`MiniMax-*`, `meta-llama/*`)."""

    name: Name
    members: tuple[Pattern, ...] = ()
    description: Text | None = None


E = TypeVar("E", bound=BaseModel)


def parse(cls: type[E], data: Any) -> E:
    """Validate `data` as `cls`; the first problem becomes an InvalidInput naming its field."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc) from None


def invalid_input(exc: ValidationError) -> InvalidInput:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "body"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return InvalidInput(field, f"{field}: {message}")


def new_model(model_id: str, owned_by: str = "system", created: int | None = None, **metadata: Any) -> Model:
    """Build a validated Model; `created` defaults to now, as OpenAI stamps new models."""
    data: dict[str, Any] = {"id": model_id, "owned_by": owned_by, **metadata}
    if created is not None:
        data["created"] = created
    return parse(Model, data)


def list_order(model: Model) -> tuple[int, str]:
    """Newest first, then by id: stable across restarts and replicas."""
    return (-model.created, model.id)
