"""The OpenAI error body, `{"error": {"message", "type", "param", "code"}}`.

One definition for the proxy, its upstream session and the local backend, so that every error
any of them answers or passes on has the same shape.
"""

from __future__ import annotations

from typing import Any


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
