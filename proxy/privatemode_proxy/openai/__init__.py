"""The OpenAI embeddings wire format, written once for the proxy, the local backend and the client.

- `_errors`: the error body `{"error": {"message", "type", "param", "code"[, "input_index"]}}`
  and `ApiError`, the one error type both servers answer with.
- `_request`: validation of `/v1/embeddings` requests, one set of rules, messages and codes
  (`EmbeddingsRequest`, `parse_*`, `check_token_counts`, `too_long_error`).
- `_vectors`: embedding vectors between JSON and numpy (`float` rows, `base64` little-endian
  float32), decoding with every check a caller relies on, Matryoshka reduction.

Light on purpose (numpy and orjson only): the client imports it without loading any server.
"""

from __future__ import annotations

from privatemode_proxy.openai._errors import (
    AUTHENTICATION,
    INVALID_REQUEST,
    NOT_FOUND,
    PERMISSION,
    RATE_LIMIT,
    SERVER,
    UPSTREAM,
    ApiError,
    error_body,
    error_type_for_status,
)
from privatemode_proxy.openai._request import (
    EmbeddingsRequest,
    check_model,
    check_token_counts,
    json_type,
    parse_dimensions,
    parse_embeddings_fields,
    parse_encoding_format,
    parse_input,
    parse_json_object,
    parse_model,
    parse_user,
    too_long_error,
)
from privatemode_proxy.openai._vectors import (
    ENCODING_FORMATS,
    EncodingFormat,
    FloatMatrix,
    VectorFormatError,
    decode_embeddings,
    encode_embeddings,
    reduce_dimensions,
)

__all__ = [
    "AUTHENTICATION",
    "ENCODING_FORMATS",
    "INVALID_REQUEST",
    "NOT_FOUND",
    "PERMISSION",
    "RATE_LIMIT",
    "SERVER",
    "UPSTREAM",
    "ApiError",
    "EmbeddingsRequest",
    "EncodingFormat",
    "FloatMatrix",
    "VectorFormatError",
    "check_model",
    "check_token_counts",
    "decode_embeddings",
    "encode_embeddings",
    "error_body",
    "error_type_for_status",
    "json_type",
    "parse_dimensions",
    "parse_embeddings_fields",
    "parse_encoding_format",
    "parse_input",
    "parse_json_object",
    "parse_model",
    "parse_user",
    "reduce_dimensions",
    "too_long_error",
]
