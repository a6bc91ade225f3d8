"""The OpenAI error body and the one error type the proxy and the local backend answer with.

Body: `{"error": {"message", "type", "param", "code"}}`, plus `"input_index"` when the error is
about one input (its index within the request), so a client reads which input failed from a field
instead of from the prose. Messages say what to change; they never contain API keys, secrets or
input texts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
PERMISSION = "permission_error"
NOT_FOUND = "not_found_error"
RATE_LIMIT = "rate_limit_error"
SERVER = "server_error"
UPSTREAM = "upstream_error"


_TYPES_BY_STATUS = {
    400: INVALID_REQUEST,
    401: AUTHENTICATION,
    403: PERMISSION,
    404: NOT_FOUND,
    409: "conflict_error",
    422: INVALID_REQUEST,
    429: RATE_LIMIT,
}


def error_type_for_status(status: int) -> str:
    """OpenAI's error `type` for an HTTP status, for answers that do not say."""
    return _TYPES_BY_STATUS.get(status, SERVER if status >= 500 else INVALID_REQUEST)


def error_body(
    message: str,
    *,
    type: str = INVALID_REQUEST,
    param: str | None = None,
    code: str | None = None,
    input_index: int | None = None,
) -> dict[str, Any]:
    """The OpenAI error object (`input_index` only when there is one)."""
    error: dict[str, Any] = {"message": message, "type": type, "param": param, "code": code}
    if input_index is not None:
        error["input_index"] = input_index
    return {"error": error}


class ApiError(Exception):
    """A request refused with an HTTP status and the OpenAI error fields."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        input_index: int | None = None,
        headers: Mapping[str, str] | None = None,
        passthrough: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.input_index = input_index
        self.headers = dict(headers or {})
        self.passthrough = passthrough
        """The whole answer, when it is another server's error passed on as it came."""

    def body(self) -> dict[str, Any]:
        if self.passthrough is not None:
            return dict(self.passthrough)
        return error_body(
            self.message,
            type=self.type,
            param=self.param,
            code=self.code,
            input_index=self.input_index,
        )

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status_code}, {self.message!r}, code={self.code!r})"
