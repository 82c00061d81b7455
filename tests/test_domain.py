"""Domain rules that need no server: ids, keys, paths."""

from __future__ import annotations

import dataclasses

import pytest

from modeldex.api import paths
from modeldex.catalog import keys
from modeldex.catalog.entities import new_model, validate_model_id
from modeldex.catalog.errors import InvalidInput
from modeldex.catalog.limits import parse_limit


@pytest.mark.parametrize("model_id", ["MiniMax-M2.7", "meta-llama/Llama-3.1-8B-Instruct", "ft:gpt-4o:acme::x1",
                                      "org/model@v1", "qwen2.5:72b-instruct-q4_K_M", "模型/中文", "a" * 256])
def test_valid_ids(model_id: str) -> None:
    assert validate_model_id(model_id) == model_id


@pytest.mark.parametrize(("model_id", "fragment"), [
    ("", "empty"), ("a" * 257, "longer"), ("a b", "not allowed"), ("a\tb", "not allowed"), ("a?b", "not allowed"),
    ("a#b", "not allowed"), ("a\x00b", "not allowed"), ("a\ufffdb", "not allowed"), ("/a", "segments"),
    ("a/", "segments"), ("a//b", "segments"), ("a/./b", "segments"), ("../a", "segments"), ("..", "segments"),
])
def test_invalid_ids_name_the_field(model_id: str, fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_model_id(model_id)
    assert caught.value.field == "id" and fragment in caught.value.message


def test_new_model_validates_owner_and_created() -> None:
    assert new_model("x", "acme", 5).created == 5
    assert new_model("x").owned_by == "system"
    for kwargs, field in [({"owned_by": ""}, "owned_by"), ({"created": -1}, "created"),
                          ({"created": True}, "created"), ({"owned_by": "a\nb"}, "owned_by")]:
        with pytest.raises(InvalidInput) as caught:
            new_model("x", **kwargs)  # type: ignore[arg-type]
        assert caught.value.field == field


def test_keys_are_random_hashed_and_verified() -> None:
    record, secret = keys.new_key("ci", keys.Scope.READ)
    _other_record, other = keys.new_key("ci", keys.Scope.READ)
    assert secret != other and len(secret) == keys.KEY_LENGTH
    assert secret not in repr(record) and record.secret_hash == keys.hash_secret(secret)
    assert keys.lookup_id_of(secret) == record.lookup_id
    assert keys.verify(secret, record)
    assert not keys.verify(other, record)
    assert not keys.verify(secret, None)
    assert keys.lookup_id_of("sk-short") is None
    assert not keys.verify(secret, dataclasses.replace(record, revoked_at=1))


def test_mask_shows_only_the_ends() -> None:
    secret = "sk-mdx-" + "A" * 48 + "WXYZ"
    masked = keys.mask(secret)
    assert masked.startswith("sk-") and masked.endswith("WXYZ") and "A" not in masked
    assert keys.mask("short") == "*****"
    assert len(keys.mask("x" * 10_000)) < 40
    assert keys.mask("\xff" * 20).strip("*") == ""


@pytest.mark.parametrize(("path", "expected"), [
    ("/v1/models/MiniMax-M2.7", "/v1/models/MiniMax-M2.7"),
    ("/v1/models/./x", "/v1/models/x"),
    ("/v1/models/a/../x", "/v1/models/x"),
    ("/v1/models/..", "/v1/"),
    ("/v1/models/.", "/v1/models/"),
    ("/../../..", "/"),
    ("/v1/models/meta-llama/Llama-3.1-8B", "/v1/models/meta-llama/Llama-3.1-8B"),
    ("/v1/models/.hidden", "/v1/models/.hidden"),
    ("/v1/models/x..y/z.", "/v1/models/x..y/z."),
])
def test_dot_segment_removal(path: str, expected: str) -> None:
    assert paths.normalize(path) == expected


@pytest.mark.parametrize("message", ["plain", 'quotes " and \\ backslashes', "模型 \u2028 \x00 control", ""])
@pytest.mark.parametrize(("type_", "param", "code"), [("invalid_request_error", None, None),
                                                       ("invalid_request_error", "model", "model_not_found"),
                                                       ("requests", None, "rate_limit_exceeded")])
def test_error_bodies_are_exactly_the_envelope_orjson_makes(message: str, type_: str, param: str | None,
                                                            code: str | None) -> None:
    """error_body assembles the envelope from parts made once; it must equal encoding the whole dict."""
    import orjson

    from modeldex.api.errors import error_body

    expected = orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})
    assert error_body(message, type_, param, code) == expected


def test_the_first_matching_rule_decides_whether_exact_or_glob() -> None:
    """Plain-id members are looked up, globs tried in turn; the rule named is still the first in order."""
    from modeldex.catalog.entities import Group
    from modeldex.catalog.policy import AccessPolicy, Visibility

    models = {m.id: m for m in (new_model("x/1"), new_model("x/2"), new_model("y/1"))}
    groups = {"globs": Group(name="globs", members=("x/*",)), "ids": Group(name="ids", members=("y/1", "x/1")),
              "big": Group(name="big", members=(*(f"z/{i}" for i in range(50_000)), "x/2"))}

    def rule(*names: str, patterns: tuple[str, ...] = ()) -> dict[str, str]:
        visibility = Visibility(AccessPolicy(groups=names, patterns=patterns), models, {}, groups, 0)
        return {model_id: visibility.decide(model_id).rule for model_id in models}

    assert rule("globs", "ids") == {"x/1": "allowed by group 'globs' (member 'x/*')",
                                    "x/2": "allowed by group 'globs' (member 'x/*')",
                                    "y/1": "allowed by group 'ids' (member 'y/1')"}
    assert rule("ids", "globs")["x/1"] == "allowed by group 'ids' (member 'x/1')"
    assert rule("ids", "globs")["x/2"] == "allowed by group 'globs' (member 'x/*')"
    assert rule("big", patterns=("x/*",))["x/2"] == "allowed by group 'big' (member 'x/2')"
    assert rule("big", patterns=("x/*",))["x/1"] == "allowed by pattern 'x/*'"
    assert rule("big")["y/1"].startswith("no group or pattern")


@pytest.mark.parametrize(("text", "requests", "period"), [
    ("600/m", 600, 60), ("1/s", 1, 1), ("5/30s", 5, 30), ("1000000000/s", 1_000_000_000, 1), ("1/366d", 1, 31_622_400),
])
def test_limits_within_bounds(text: str, requests: int, period: int) -> None:
    limit = parse_limit(text)
    assert limit is not None and (limit.requests, limit.period) == (requests, period)
    assert parse_limit(str(limit)) == limit


@pytest.mark.parametrize(("text", "fragment"), [
    ("5/0s", "period"), ("5/00m", "period"), ("1/367d", "period"), ("1/99999999999999999999d", "period"),
    ("0/m", "number of requests"), ("1000000001/s", "number of requests"), ("lots", "not a rate limit"),
    ("9" * 5000 + "/s", "not a rate limit"),
])
def test_limits_out_of_bounds_say_why(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_limit(text)
