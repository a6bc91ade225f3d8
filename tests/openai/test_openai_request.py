"""Request validation of the OpenAI wire layer, unit by unit: the one set of rules, messages and
codes the proxy and the local backend share (their HTTP-level checks are in test_proxy_e2e.py and
test_backend.py)."""

from __future__ import annotations

import pytest
from privatemode_proxy._catalogue import ALL_MINILM_L6_V2, QWEN3_EMBEDDING_4B
from privatemode_proxy.openai import (
    ApiError,
    check_model,
    check_token_counts,
    parse_dimensions,
    parse_embeddings_fields,
    parse_encoding_format,
    parse_input,
    parse_json_object,
    parse_model,
    too_long_error,
)

MINI = ALL_MINILM_L6_V2
SERVED = {MINI.id: MINI}


def refused(func: object, *args: object, **kwargs: object) -> ApiError:
    assert callable(func)
    with pytest.raises(ApiError) as info:
        func(*args, **kwargs)
    body = info.value.body()
    assert set(body["error"]) <= {"message", "type", "param", "code", "input_index"}
    assert body["error"]["type"] == "invalid_request_error"
    return info.value


def test_json_object_parsed_and_non_objects_refused() -> None:
    assert parse_json_object(b'{"a": [1, 2]}') == {"a": [1, 2]}
    err = refused(parse_json_object, b'{"a": "secret text", ')
    assert err.status_code == 400 and "not valid JSON (at character" in err.message
    assert "secret" not in err.message and err.code == "invalid_json"
    err = refused(parse_json_object, b"[1, 2]")
    assert err.status_code == 400 and "must be a JSON object, got array" in err.message


def test_model_known_missing_unknown() -> None:
    assert check_model({"model": MINI.id}, SERVED) is MINI
    assert parse_model("any-model") == "any-model"  # without a served list, any name
    for missing in ({}, {"model": ""}, {"model": None}):
        err = refused(check_model, missing, SERVED)
        assert (err.status_code, err.param, err.code) == (400, "model", "missing_model")
        assert "'model' is required" in err.message and MINI.id in err.message
    err = refused(check_model, {"model": 7}, SERVED)
    assert err.status_code == 400 and "must be a string" in err.message
    assert err.code == "invalid_model"
    err = refused(check_model, {"model": "gpt-4"}, SERVED)
    assert (err.status_code, err.code) == (404, "model_not_found")
    assert "'gpt-4' does not exist" in err.message and MINI.id in err.message
    err = refused(check_model, {"model": "x" * 500}, SERVED)
    assert "x" * 101 not in err.message


def test_input_string_and_list_of_strings() -> None:
    assert parse_input("one") == ["one"]
    assert parse_input(["a", "", "c"]) == ["a", "", "c"]


TOKENS = "token arrays are not supported by Privatemode"


@pytest.mark.parametrize(
    ("value", "needle", "code", "index"),
    [
        (None, "'input' is required", "missing_input", None),
        ([], "empty list", "empty_input", None),
        (12, "got number", "invalid_input", None),
        ({"text": "x"}, "got object", "invalid_input", None),
        (["a", None], "input[1] must be a string, got null", "invalid_input", 1),
        (["a", "b", True], "input[2] must be a string, got boolean", "invalid_input", 2),
        ([1, 2, 3], TOKENS, "token_input_not_supported", None),
        ([[1, 2], [3]], TOKENS, "token_input_not_supported", None),
        (["a", [1, 2]], TOKENS, "token_input_not_supported", None),
    ],
)
def test_input_refused(value: object, needle: str, code: str, index: int | None) -> None:
    err = refused(parse_input, value)
    assert err.status_code == 400 and err.param == "input" and err.code == code
    assert err.input_index == index
    assert ("input_index" in err.body()["error"]) == (index is not None)
    assert needle in err.message


def test_token_array_message_says_to_pass_strings() -> None:
    err = refused(parse_input, [101, 7592, 102])
    assert "string" in err.message and "check_embedding_ctx_length=False" in err.message


def test_too_many_inputs_names_counts() -> None:
    n = MINI.max_inputs_per_request
    assert len(parse_input(["x"] * n, n)) == n
    err = refused(parse_input, ["x"] * (n + 1), n, holder=f"model '{MINI.id}'")
    assert err.code == "too_many_inputs"
    assert (
        f"{n + 1} given" in err.message and f"model '{MINI.id}' accepts at most {n}" in err.message
    )


def test_encoding_format() -> None:
    assert parse_encoding_format(None) == "float"
    assert parse_encoding_format("float") == "float"
    assert parse_encoding_format("base64") == "base64"
    for bad in ("FLOAT", "int8", 3):
        err = refused(parse_encoding_format, bad)
        assert err.param == "encoding_format" and "'float' or 'base64'" in err.message
        assert err.code == "invalid_encoding_format"
    assert "'int8'" in refused(parse_encoding_format, "int8").message
    # a value that came encrypted is not echoed in the (plaintext) error
    hidden = refused(parse_encoding_format, "secret-format", echo=False)
    assert "secret" not in hidden.message and "got a string" in hidden.message


def test_dimensions_for_model_without_reduction() -> None:
    assert parse_dimensions(None, MINI) is None
    assert parse_dimensions(384, MINI) == 384
    err = refused(parse_dimensions, 128, MINI)
    assert err.param == "dimensions" and "does not support reduced dimensions" in err.message
    err = refused(parse_dimensions, "384", MINI)
    assert "must be a positive integer, got string" in err.message
    err = refused(parse_dimensions, True, MINI)
    assert "must be a positive integer, got boolean" in err.message
    assert parse_dimensions(128) == 128  # an unknown model: any positive integer
    err = refused(parse_dimensions, 0)
    assert "must be a positive integer, got 0" in err.message and err.code == "invalid_dimensions"


def test_dimensions_range_for_matryoshka_model() -> None:
    assert parse_dimensions(32, QWEN3_EMBEDDING_4B) == 32
    assert parse_dimensions(2560, QWEN3_EMBEDDING_4B) == 2560
    for bad in (31, 2561):
        err = refused(parse_dimensions, bad, QWEN3_EMBEDDING_4B)
        assert "between 32 and 2560" in err.message
    for bad in (0, -5):
        assert "positive integer" in refused(parse_dimensions, bad, QWEN3_EMBEDDING_4B).message


def test_full_request_keeps_other_fields_but_checks_user() -> None:
    parsed = parse_embeddings_fields(
        {"input": ["a"], "encoding_format": "base64", "user": "u1", "extra": 1}, MINI.id, MINI
    )
    assert (parsed.texts, parsed.encoding_format, parsed.dimensions) == (["a"], "base64", None)
    assert parsed.passthrough == {"user": "u1", "extra": 1}
    err = refused(parse_embeddings_fields, {"input": "a", "user": 5}, MINI.id, MINI)
    assert err.param == "user" and err.code == "invalid_user"


def test_request_repr_hides_texts() -> None:
    parsed = parse_embeddings_fields({"input": ["very private text"]}, MINI.id, MINI)
    assert "private" not in repr(parsed)


def test_token_limits_name_index_and_counts() -> None:
    limit = MINI.max_tokens_per_input
    assert check_token_counts([2, limit, 5], MINI) == limit + 7
    err = refused(check_token_counts, [2, limit + 1, 5, 900], MINI)
    assert err.code == "context_length_exceeded" and err.input_index == 1
    assert err.body()["error"]["input_index"] == 1
    assert f"input 1 has {limit + 1} tokens" in err.message
    assert f"at most {limit} tokens per input" in err.message
    assert "1 more inputs" in err.message
    assert too_long_error(MINI, [(7, limit + 3)]).input_index == 7


def test_tokens_per_request_limit() -> None:
    per_input = MINI.max_tokens_per_input
    n = MINI.max_tokens_per_request // per_input + 1
    err = refused(check_token_counts, [per_input] * n, MINI)
    assert err.code == "request_too_many_tokens"
    assert str(n * per_input) in err.message and str(MINI.max_tokens_per_request) in err.message


def test_passed_through_body_is_answered_as_it_came() -> None:
    upstream = {"error": {"message": "m", "type": "t", "param": None, "code": "c"}, "extra": 1}
    assert ApiError(418, "m", passthrough=upstream).body() == upstream


def test_a_known_models_own_input_limit_applies() -> None:
    n = MINI.max_inputs_per_request
    err = refused(parse_embeddings_fields, {"input": ["x"] * (n + 1)}, MINI.id, MINI)
    assert err.code == "too_many_inputs" and f"model '{MINI.id}' accepts at most {n}" in err.message
    assert len(parse_embeddings_fields({"input": ["x"] * (n + 1)}, "other").texts) == n + 1
