"""The embeddings request validation of the local backend, unit by unit (the HTTP-level checks of
the same rules are in test_backend.py)."""

from __future__ import annotations

import pytest
from privatemode_proxy._catalogue import ALL_MINILM_L6_V2, QWEN3_EMBEDDING_4B
from privatemode_proxy.local._errors import ApiError
from privatemode_proxy.local._validation import (
    check_model,
    check_token_counts,
    parse_dimensions,
    parse_embeddings_request,
    parse_encoding_format,
    parse_input,
    parse_json_object,
)

MINI = ALL_MINILM_L6_V2
SERVED = {MINI.id: MINI}


def refused(func: object, *args: object) -> ApiError:
    assert callable(func)
    with pytest.raises(ApiError) as info:
        func(*args)
    body = info.value.body()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return info.value


def test_json_object_parsed_and_non_objects_refused() -> None:
    assert parse_json_object(b'{"a": [1, 2]}') == {"a": [1, 2]}
    err = refused(parse_json_object, b'{"a": ')
    assert err.status == 400 and "not valid JSON" in err.message
    err = refused(parse_json_object, b"[1, 2]")
    assert err.status == 400 and "must be a JSON object, got array" in err.message


def test_model_known_missing_unknown() -> None:
    assert check_model({"model": MINI.id}, SERVED) is MINI
    err = refused(check_model, {}, SERVED)
    assert (err.status, err.param) == (400, "model") and MINI.id in err.message
    err = refused(check_model, {"model": 7}, SERVED)
    assert err.status == 400 and "must be a string" in err.message
    err = refused(check_model, {"model": "gpt-4"}, SERVED)
    assert (err.status, err.code) == (404, "model_not_found")
    assert "'gpt-4' does not exist" in err.message and MINI.id in err.message


def test_input_string_and_list_of_strings() -> None:
    assert parse_input("one", MINI) == ["one"]
    assert parse_input(["a", "", "c"], MINI) == ["a", "", "c"]


TOKENS = "token arrays are not supported by Privatemode"


@pytest.mark.parametrize(
    ("value", "needle", "code"),
    [
        (None, "'input' is required", "missing_input"),
        ([], "empty list", "empty_input"),
        (12, "got number", "invalid_input"),
        ({"text": "x"}, "got object", "invalid_input"),
        (["a", None], "input[1] must be a string, got null", "invalid_input"),
        (["a", "b", True], "input[2] must be a string, got boolean", "invalid_input"),
        ([1, 2, 3], TOKENS, "token_input_not_supported"),
        ([[1, 2], [3]], TOKENS, "token_input_not_supported"),
        (["a", [1, 2]], TOKENS, "token_input_not_supported"),
    ],
)
def test_input_refused(value: object, needle: str, code: str) -> None:
    err = refused(parse_input, value, MINI)
    assert err.status == 400 and err.param == "input" and err.code == code
    assert needle in err.message


def test_token_array_message_says_to_pass_strings() -> None:
    err = refused(parse_input, [101, 7592, 102], MINI)
    assert "string" in err.message


def test_too_many_inputs_names_counts() -> None:
    n = MINI.max_inputs_per_request
    assert len(parse_input(["x"] * n, MINI)) == n
    err = refused(parse_input, ["x"] * (n + 1), MINI)
    assert err.code == "too_many_inputs"
    assert f"{n + 1} given" in err.message and f"at most {n}" in err.message


def test_encoding_format() -> None:
    assert parse_encoding_format(None) == "float"
    assert parse_encoding_format("float") == "float"
    assert parse_encoding_format("base64") == "base64"
    for bad in ("FLOAT", "int8", 3):
        err = refused(parse_encoding_format, bad)
        assert err.param == "encoding_format" and "'float' or 'base64'" in err.message


def test_dimensions_for_model_without_reduction() -> None:
    assert parse_dimensions(None, MINI) is None
    assert parse_dimensions(384, MINI) == 384
    err = refused(parse_dimensions, 128, MINI)
    assert err.param == "dimensions" and "does not support reduced dimensions" in err.message
    err = refused(parse_dimensions, "384", MINI)
    assert "must be an integer, got string" in err.message
    err = refused(parse_dimensions, True, MINI)
    assert "must be an integer, got boolean" in err.message


def test_dimensions_range_for_matryoshka_model() -> None:
    assert parse_dimensions(32, QWEN3_EMBEDDING_4B) == 32
    assert parse_dimensions(2560, QWEN3_EMBEDDING_4B) == 2560
    for bad in (31, 2561, 0, -5):
        err = refused(parse_dimensions, bad, QWEN3_EMBEDDING_4B)
        assert "between 32 and 2560" in err.message


def test_full_request_ignores_unused_fields_but_checks_user() -> None:
    parsed = parse_embeddings_request(
        {"input": ["a"], "encoding_format": "base64", "user": "u1", "extra": 1}, MINI
    )
    assert (parsed.texts, parsed.encoding_format, parsed.dimensions) == (["a"], "base64", None)
    err = refused(parse_embeddings_request, {"input": "a", "user": 5}, MINI)
    assert err.param == "user"


def test_request_repr_hides_texts() -> None:
    parsed = parse_embeddings_request({"input": ["very private text"]}, MINI)
    assert "private" not in repr(parsed)


def test_token_limits_name_index_and_counts() -> None:
    limit = MINI.max_tokens_per_input
    assert check_token_counts([2, limit, 5], MINI) == limit + 7
    err = refused(check_token_counts, [2, limit + 1, 5, 900], MINI)
    assert err.code == "input_too_long"
    assert f"input[1] has {limit + 1} tokens" in err.message
    assert f"limit of {limit} tokens per input" in err.message
    assert "1 more inputs" in err.message


def test_tokens_per_request_limit() -> None:
    per_input = MINI.max_tokens_per_input
    n = MINI.max_tokens_per_request // per_input + 1
    err = refused(check_token_counts, [per_input] * n, MINI)
    assert err.code == "request_too_many_tokens"
    assert str(n * per_input) in err.message and str(MINI.max_tokens_per_request) in err.message
