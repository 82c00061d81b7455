"""What an upstream's `/v1/models` answer says, validated, as catalog models.

The answer as a whole is strict: anything that is not `{"data": [{"id": "..."}, ...]}` with ids the
catalog can serve (no control characters, no whitespace, ...) rejects all of it, so a broken or hostile
upstream can never put half an answer into the catalog. Two real variants of that shape are read as it:
a bare array (Together's `/v1/models`), and `"data": null` (Ollama with no model pulled: a Go nil slice).
A list in pages (`has_more` with `last_id`, Anthropic's and MiniMax's Anthropic-compatible lists) is
followed page by page (`next_cursor`). Metadata is best-effort: a field that does not validate is left
out, and the model is kept.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from modeldex.catalog.entities import MAX_MODEL_ID_LENGTH, Model, model_id_problem, parse
from modeldex.catalog.errors import InvalidInput
from modeldex.catalog.upstreams import Upstream

MAX_MODELS = 10_000
_MODALITIES = {"text", "image", "audio", "video", "file", "embeddings"}


class InvalidAnswer(Exception):
    """The upstream answered, but not with a model list the catalog can take."""


def _shown(value: Any) -> str:
    """A value from the upstream as it may appear in a message: escaped, and short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_answer(document: Any) -> list[dict[str, Any]]:
    """The entries of an OpenAI-style model list; raises InvalidAnswer for anything else."""
    if isinstance(document, list):  # Together answers the array alone
        document = {"data": document}
    if isinstance(document, dict) and "data" in document and document["data"] is None:
        document = {"data": []}  # Ollama with no models: Go encodes its empty (nil) slice as null
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise InvalidAnswer('not a model list: expected a JSON object with a "data" array')
    entries: list[dict[str, Any]] = document["data"]
    if len(entries) > MAX_MODELS:
        raise InvalidAnswer(f"{len(entries)} models: more than the {MAX_MODELS} an upstream may list")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidAnswer(f"data[{index}] is not an object")
        model_id = entry.get("id")
        if not isinstance(model_id, str):
            raise InvalidAnswer(f"data[{index}].id is not a string")
        problem = model_id_problem(model_id)
        if problem is not None:
            raise InvalidAnswer(f"data[{index}].id {_shown(model_id)}: {problem}")
    return entries


def next_cursor(document: Any, entries: list[dict[str, Any]]) -> str | None:
    """Where the next page of a paged list starts (its `last_id`, else its last entry's id), None when this
    page is the last. A list that says there is more but not where it goes on is refused: taking the first
    page as the whole list would mark every model on the others stale, then remove them."""
    if not isinstance(document, dict) or document.get("has_more") is not True:
        return None
    cursor = document.get("last_id")
    if cursor is None and entries:
        cursor = entries[-1]["id"]
    if not isinstance(cursor, str) or not cursor:
        raise InvalidAnswer('"has_more" is true, but the answer has no "last_id" to ask for the next page from')
    return cursor


def _text(value: Any, also: str = "") -> str | None:
    """Display text, if it has no control characters (an upstream's word is not trusted with a terminal)."""
    if isinstance(value, str) and all(ch.isprintable() or ch in also for ch in value):
        return value
    return None


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**53 else None


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _price(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, "f") if isinstance(value, int) else repr(value)
    return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def metadata_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The metadata an entry carries, in catalog field names: OpenRouter-style fields (and modeldex's own),
    vLLM's `max_model_len`, LiteLLM's `max_input_tokens`, Groq's `context_window` and
    `max_completion_tokens`, Mistral's `max_context_length`."""
    top, arch, pricing = (_mapping(entry.get(name)) for name in ("top_provider", "architecture", "pricing"))
    fields: dict[str, Any] = {
        "name": _text(entry.get("name")),
        "description": _text(entry.get("description"), "\n\t"),
        "context_length": _first(*map(_positive_int, (
            entry.get("context_length"), entry.get("max_model_len"), entry.get("max_input_tokens"),
            entry.get("context_window"), entry.get("max_context_length"), top.get("context_length")))),
        "max_output_tokens": _first(*map(_positive_int, (entry.get("max_output_tokens"),
                                                         entry.get("max_completion_tokens"),
                                                         top.get("max_completion_tokens")))),
    }
    for side in ("input_modalities", "output_modalities"):
        values = arch.get(side)
        if isinstance(values, list) and values and all(v in _MODALITIES for v in values):
            fields[side] = values
    prices = {k: p for k in ("prompt", "completion") if (p := _price(pricing.get(k))) is not None}
    if prices:
        fields["pricing"] = prices
    return {k: v for k, v in fields.items() if v is not None}


_MILLISECONDS = 10**11  # as seconds, the year 5138; as milliseconds, 1973: no creation time is the former


def _created(entry: dict[str, Any]) -> int | None:
    """When the upstream says the model was created, in Unix seconds (OpenAI's `created`): also from
    milliseconds, a float, or an ISO 8601 string, in `created` or (Anthropic-style lists) `created_at`.
    None when it says nothing usable."""
    value = _first(entry.get("created"), entry.get("created_at"))
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        value = (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, float):
        value = int(value) if value == value and abs(value) < 2**53 else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return None
    if value >= _MILLISECONDS:
        value //= 1000
    return value if value < _MILLISECONDS else None


def to_models(upstream: Upstream, entries: list[dict[str, Any]], now: float) -> list[Model]:
    """The catalog models `entries` (from `parse_answer`) yield under the upstream's settings: filtered by
    its globs, renamed with its prefix, owned by its `owned_by` if set, else the upstream's word, else
    the upstream's name. Raises InvalidAnswer if a prefixed id cannot be served."""
    models: dict[str, Model] = {}
    metadata = [metadata_of(entry) for entry in entries]
    # vLLM lists a LoRA adapter with its base model as `parent` and no `max_model_len`: it runs in the same
    # engine, with the same context length.
    contexts: dict[str, int] = {}
    for entry, fields in zip(entries, metadata, strict=True):
        if "context_length" in fields:
            contexts.setdefault(entry["id"], fields["context_length"])
    for entry, fields in zip(entries, metadata, strict=True):
        upstream_id = entry["id"]
        if not upstream.yields(upstream_id):
            continue
        model_id = upstream.catalog_id(upstream_id)
        if model_id in models:
            continue  # listed twice: the first one counts
        problem = model_id_problem(model_id)
        if problem is not None:
            raise InvalidAnswer(f"{_shown(model_id)} (with the prefix): {problem}"
                                if len(model_id) <= MAX_MODEL_ID_LENGTH else
                                f"{_shown(upstream_id)} is too long once prefixed")
        owner = entry.get("owned_by")
        owner = owner if isinstance(owner, str) and owner.strip() else upstream.name
        data: dict[str, Any] = {
            "id": model_id,
            "created": _first(_created(entry), int(now)),
            "owned_by": upstream.owned_by or owner,
            "source": upstream.name,
            **fields,
        }
        parent = entry.get("parent")
        if "context_length" not in data and isinstance(parent, str) and parent in contexts:
            data["context_length"] = contexts[parent]
        models[model_id] = _valid_model(data)
    return list(models.values())


def _valid_model(data: dict[str, Any]) -> Model:
    """The model with every field that validates; fields that do not are dropped, one by one."""
    for _attempt in range(len(data)):
        try:
            return parse(Model, data)
        except InvalidInput as exc:
            field = exc.field.split(".")[0]
            if field in ("id", "source") or field not in data:
                raise InvalidAnswer(exc.message) from None
            data = {**data, "owned_by": data["source"]} if field == "owned_by" else {k: v for k, v in data.items() if k != field}
    return parse(Model, {"id": data["id"], "owned_by": data["source"], "source": data["source"]})
