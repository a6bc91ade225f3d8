"""Validation of `/v1/embeddings` requests: one set of rules, messages and codes.

The proxy checks a client's plaintext request with these functions before anything goes upstream;
the local backend checks the decrypted fields with the same ones. Each either returns the checked
value or raises `ApiError` (400, or 404 for a model the server does not serve) with a message that
says what to change. Messages name indices, counts and limits, never input texts; a value that
came encrypted is not echoed (`echo=False`).

Codes: `invalid_json`, `missing_model`, `invalid_model`, `model_not_found`, `missing_input`,
`empty_input`, `invalid_input`, `token_input_not_supported`, `too_many_inputs`,
`invalid_encoding_format`, `invalid_dimensions`, `invalid_user`, `context_length_exceeded`
(with `input_index`), `request_too_many_tokens`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from privatemode_proxy._catalogue import ModelInfo
from privatemode_proxy.openai._errors import ApiError
from privatemode_proxy.openai._vectors import ENCODING_FORMATS, EncodingFormat

_CONSUMED = frozenset({"model", "input", "encoding_format", "dimensions"})
_SHOWN_CHARS = 100


@dataclass
class EmbeddingsRequest:
    """A validated embeddings request (token counts are checked apart: they need a tokenizer)."""

    model: str
    texts: list[str]
    encoding_format: EncodingFormat
    dimensions: int | None
    passthrough: dict[str, Any] = field(default_factory=dict)
    """Other fields (`user`, unknown extensions), kept as they came for whoever forwards them."""

    def __repr__(self) -> str:
        # Never show input texts in logs or tracebacks.
        return (
            f"EmbeddingsRequest(model={self.model!r}, <{len(self.texts)} texts>, "
            f"encoding_format={self.encoding_format!r}, dimensions={self.dimensions!r})"
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


def _shown(value: str) -> str:
    return value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"


def parse_json_object(body: bytes, *, what: str = "request body") -> dict[str, Any]:
    """Parse `body` as a JSON object or raise a 400 (naming the position, never the content)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            400,
            f"the {what} is not valid JSON (at character {exc.pos}); send a JSON object",
            code="invalid_json",
        ) from None
    if not isinstance(value, dict):
        raise ApiError(
            400, f"the {what} must be a JSON object, got {json_type(value)}", code="invalid_json"
        )
    return value


def parse_model(value: object, served: Mapping[str, ModelInfo] | None = None) -> str:
    """The `model` field; with `served`, it must be one of them (404 otherwise)."""
    hint = f"; this server serves: {', '.join(sorted(served))}" if served is not None else ""
    if value is None or value == "":
        raise ApiError(400, f"'model' is required{hint}", param="model", code="missing_model")
    if not isinstance(value, str):
        raise ApiError(
            400,
            f"'model' must be a string, got {json_type(value)}{hint}",
            param="model",
            code="invalid_model",
        )
    if served is not None and value not in served:
        raise ApiError(
            404,
            f"the model '{_shown(value)}' does not exist on this server{hint}",
            param="model",
            code="model_not_found",
        )
    return value


def check_model(fields: Mapping[str, Any], served: Mapping[str, ModelInfo]) -> ModelInfo:
    """The served model named by the `model` field; 400 if missing, 404 if unknown."""
    return served[parse_model(fields.get("model"), served)]


def _is_token_array(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


STRINGS_ONLY_MESSAGE = (
    "token arrays are not supported by Privatemode: pass 'input' as a string or a list of "
    "strings (the texts themselves, not token IDs; with langchain-openai's OpenAIEmbeddings, set "
    "check_embedding_ctx_length=False)"
)


def parse_input(
    value: object, max_inputs: int | None = None, *, holder: str = "this server"
) -> list[str]:
    """The list of input texts of the `input` field; at most `max_inputs` of them, a limit
    `holder` (e.g. "model 'x'") sets."""
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
        raise ApiError(400, STRINGS_ONLY_MESSAGE, param="input", code="token_input_not_supported")
    for index, item in enumerate(value):
        if isinstance(item, str):
            continue
        raise ApiError(
            400,
            f"input[{index}] must be a string, got {json_type(item)}; "
            "'input' must be a string or a list of strings",
            param="input",
            code="invalid_input",
            input_index=index,
        )
    if max_inputs is not None and len(value) > max_inputs:
        raise ApiError(
            400,
            f"too many inputs: {len(value)} given, {holder} accepts at most {max_inputs} per "
            "request; split them over several requests",
            param="input",
            code="too_many_inputs",
        )
    return value


def parse_encoding_format(value: object, *, echo: bool = True) -> EncodingFormat:
    """`float` (the default) or `base64`; with `echo=False` a refused value is not quoted."""
    if value is None:
        return "float"
    for known in ENCODING_FORMATS:
        if value == known:
            return known
    shown = repr(_shown(value)) if echo and isinstance(value, str) else f"a {json_type(value)}"
    raise ApiError(
        400,
        f"'encoding_format' must be 'float' or 'base64', got {shown}",
        param="encoding_format",
        code="invalid_encoding_format",
    )


def parse_dimensions(value: object, model: ModelInfo | None = None) -> int | None:
    """A positive integer, within what `model` can give when the model is known."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        got = value if isinstance(value, int) and not isinstance(value, bool) else json_type(value)
        raise ApiError(
            400,
            f"'dimensions' must be a positive integer, got {got}",
            param="dimensions",
            code="invalid_dimensions",
        )
    problem = model.check_dimensions(value) if model is not None else None
    if problem is not None:
        raise ApiError(400, problem, param="dimensions", code="invalid_dimensions")
    return value


def parse_user(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ApiError(
            400,
            f"'user' must be a string, got {json_type(value)}",
            param="user",
            code="invalid_user",
        )
    return value


def parse_embeddings_fields(
    fields: Mapping[str, Any],
    model: str,
    info: ModelInfo | None = None,
    *,
    max_inputs: int | None = None,
    holder: str = "this server",
    echo: bool = True,
) -> EmbeddingsRequest:
    """Validate the fields of an embeddings request for `model` (`info` when it is known).

    Inputs are limited to `max_inputs` (set by `holder`), else to the known model's own limit.
    Fields nobody here uses (`user`, vendor extensions) are kept in `passthrough`, as they came;
    `user` must still be a string when given. `echo=False` for fields that came encrypted.
    """
    if max_inputs is None and info is not None:
        max_inputs, holder = info.max_inputs_per_request, f"model '{info.id}'"
    texts = parse_input(fields.get("input"), max_inputs, holder=holder)
    encoding_format = parse_encoding_format(fields.get("encoding_format"), echo=echo)
    dimensions = parse_dimensions(fields.get("dimensions"), info)
    parse_user(fields.get("user"))
    passthrough = {k: v for k, v in fields.items() if k not in _CONSUMED}
    return EmbeddingsRequest(model, texts, encoding_format, dimensions, passthrough)


def too_long_error(model: ModelInfo, too_long: Sequence[tuple[int, int]]) -> ApiError:
    """The 400 for inputs over the model's tokens per input; `too_long` is (index, tokens) pairs,
    the first of which the message and `input_index` name."""
    index, tokens = too_long[0]
    more = f" ({len(too_long) - 1} more inputs are over the limit too)" if len(too_long) > 1 else ""
    return ApiError(
        400,
        f"input {index} has {tokens} tokens; model '{model.id}' accepts at most "
        f"{model.max_tokens_per_input} tokens per input{more}. Shorten or split it.",
        param="input",
        code="context_length_exceeded",
        input_index=index,
    )


def check_token_counts(counts: Sequence[int], model: ModelInfo) -> int:
    """Refuse inputs over the model's limits; return the total token count."""
    over = [(i, n) for i, n in enumerate(counts) if n > model.max_tokens_per_input]
    if over:
        raise too_long_error(model, over)
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
