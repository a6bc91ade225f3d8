"""OpenAI-shaped HTTP errors of the local backend.

Every error the backend answers has the body `{"error": {"message", "type", "param", "code"}}`,
unencrypted. Messages say what to change; they never contain API keys, secrets or input texts.
"""

from __future__ import annotations

from typing import Any

import orjson

from .._openai_errors import error_body

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
NOT_FOUND = "not_found_error"
SERVER = "server_error"


class ApiError(Exception):
    """A request the backend refuses, with the HTTP status and the OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.message!r}, code={self.code!r})"
