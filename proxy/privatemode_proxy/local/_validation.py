"""Validation of `/v1/embeddings` requests, before anything reaches the engine.

Pure functions over parsed JSON: each either returns the checked value or raises `ApiError` with a
message that says what to change. Messages name indices, counts and limits, never input texts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .._catalogue import ModelInfo
from ._errors import ApiError

EncodingFormat = Literal["float", "base64"]
ENCODING_FORMATS: tuple[EncodingFormat, ...] = ("float", "base64")


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A validated embeddings request (token counts are checked apart: they need the engine)."""

    texts: list[str]
    encoding_format: EncodingFormat
    dimensions: int | None

    def __repr__(self) -> str:
        # Never show input texts in logs or tracebacks.
        return (
            f"EmbeddingsRequest(<{len(self.texts)} texts>, encoding_format="
            f"{self.encoding_format!r}, dimensions={self.dimensions!r})"
        )


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def parse_json_object(body: bytes, *, what: str = "request body") -> dict[str, Any]:
    """Parse `body` as a JSON object or raise a 400."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(
            400,
            f"the {what} is not valid JSON; send a JSON object",
            code="invalid_json",
        ) from None
    if not isinstance(value, dict):
        raise ApiError(
            400,
            f"the {what} must be a JSON object, got {json_type(value)}",
            code="invalid_json",
        )
    return value


def check_model(fields: Mapping[str, Any], served: Mapping[str, ModelInfo]) -> ModelInfo:
    """The served model named by the plaintext `model` field; 400 if missing, 404 if unknown."""
    model = fields.get("model")
    available = ", ".join(sorted(served))
    if model is None:
        raise ApiError(
            400,
            f"'model' is required; this backend serves: {available}",
            param="model",
            code="missing_model",
        )
    if not isinstance(model, str):
        raise ApiError(
            400,
            f"'model' must be a string, got {json_type(model)}; this backend serves: {available}",
            param="model",
            code="invalid_model",
        )
    info = served.get(model)
    if info is None:
        shown = model if len(model) <= 100 else model[:100] + "…"
        raise ApiError(
            404,
            f"the model '{shown}' does not exist on this backend; it serves: {available}",
            type="invalid_request_error",
            param="model",
            code="model_not_found",
        )
    return info


def _is_token_array(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


_INTEGER_INPUT_UNSUPPORTED = (
    "token arrays are not supported by Privatemode: pass 'input' as a string or a list of "
    "strings (the text itself, not token IDs)"
)


def parse_input(value: object, model: ModelInfo) -> list[str]:
    """The list of input texts of the decrypted `input` field."""
    if value is None:
        raise ApiError(
            400,
            "'input' is required: pass a string or a list of strings to embed",
            param="input",
            code="missing_input",
        )
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ApiError(
            400,
            f"'input' must be a string or a list of strings, got {json_type(value)}",
            param="input",
            code="invalid_input",
        )
    if not value:
        raise ApiError(
            400,
            "'input' is an empty list: pass at least one string to embed",
            param="input",
            code="empty_input",
        )
    if _is_token_array(value) or any(isinstance(v, list) and _is_token_array(v) for v in value):
        raise ApiError(
            400, _INTEGER_INPUT_UNSUPPORTED, param="input", code="token_input_not_supported"
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ApiError(
                400,
                f"input[{index}] must be a string, got {json_type(item)}; "
                "'input' must be a string or a list of strings",
                param="input",
                code="invalid_input",
            )
    if len(value) > model.max_inputs_per_request:
        raise ApiError(
            400,
            f"too many inputs: {len(value)} given, model '{model.id}' accepts at most "
            f"{model.max_inputs_per_request} per request; split them over several requests",
            param="input",
            code="too_many_inputs",
        )
    return value


def parse_encoding_format(value: object) -> EncodingFormat:
    if value is None:
        return "float"
    if value == "float":
        return "float"
    if value == "base64":
        return "base64"
    # The value came encrypted: don't echo it in a plaintext error.
    raise ApiError(
        400,
        f"unknown 'encoding_format' ({json_type(value)} value not recognised); "
        "use 'float' or 'base64'",
        param="encoding_format",
        code="invalid_encoding_format",
    )


def parse_dimensions(value: object, model: ModelInfo) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(
            400,
            f"'dimensions' must be an integer, got {json_type(value)}",
            param="dimensions",
            code="invalid_dimensions",
        )
    problem = model.check_dimensions(value)
    if problem is not None:
        raise ApiError(400, problem, param="dimensions", code="invalid_dimensions")
    return value


def parse_embeddings_request(fields: Mapping[str, Any], model: ModelInfo) -> EmbeddingsRequest:
    """Validate the decrypted fields of an embeddings request.

    Fields the backend does not use (`user`, vendor extensions) are ignored, as the real service
    does; `user` must still be a string when given.
    """
    user = fields.get("user")
    if user is not None and not isinstance(user, str):
        raise ApiError(
            400,
            f"'user' must be a string, got {json_type(user)}",
            param="user",
            code="invalid_user",
        )
    texts = parse_input(fields.get("input"), model)
    encoding_format = parse_encoding_format(fields.get("encoding_format"))
    dimensions = parse_dimensions(fields.get("dimensions"), model)
    return EmbeddingsRequest(texts=texts, encoding_format=encoding_format, dimensions=dimensions)


def check_token_counts(counts: Sequence[int], model: ModelInfo) -> int:
    """Refuse inputs over the model's limits; return the total token count."""
    over = [i for i, n in enumerate(counts) if n > model.max_tokens_per_input]
    if over:
        first = over[0]
        more = f" ({len(over) - 1} more inputs are over the limit too)" if len(over) > 1 else ""
        raise ApiError(
            400,
            f"input[{first}] has {counts[first]} tokens, over the limit of "
            f"{model.max_tokens_per_input} tokens per input of model '{model.id}'{more}; "
            "shorten or split it",
            param="input",
            code="input_too_long",
        )
    total = int(sum(counts))
    if total > model.max_tokens_per_request:
        raise ApiError(
            400,
            f"the request has {total} tokens in all, over the limit of "
            f"{model.max_tokens_per_request} tokens per request of model '{model.id}'; "
            "split the inputs over several requests",
            param="input",
            code="request_too_many_tokens",
        )
    return total
