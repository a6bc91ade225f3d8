"""The exceptions the client core raises (all exported at the package root, where their
`__module__` says they live).

    PrivatemodeError
    ├── APIConnectionError ......... the endpoint could not be reached (`attempts`)
    │   └── APITimeoutError
    ├── APIResponseError ........... a 2xx answer that is not one vector per input
    └── APIStatusError ............. an HTTP error status: `status_code`, `message`, `type`,
        │                            `param`, `code`, `input_index`, `attempts`, `body`
        ├── BadRequestError ........ 400
        │   └── InputTooLongError .. over the model's tokens per input (`input_indices`)
        ├── AuthenticationError .... 401
        ├── PermissionDeniedError .. 403
        ├── NotFoundError .......... 404
        ├── RateLimitError ......... 429
        └── InternalServerError .... 5xx

Every message says what failed and, where the caller can act on it, what to change. No message,
repr or attribute holds the API key, request headers or input texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _rebuild(cls: type[PrivatemodeError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class PrivatemodeError(Exception):
    """Base class of every error raised by `privatemode_integrations`.

    Every one survives a `pickle` round trip with its attributes (process pools, e.g. LlamaIndex's
    `IngestionPipeline(num_workers=...)`, ship a worker's exception to the parent that way; an
    exception that cannot be rebuilt there leaves the parent waiting forever).
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # The default rebuilds with `cls(*args)`, which misses the keyword-only arguments.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class APIConnectionError(PrivatemodeError):
    """The endpoint could not be reached, or the connection failed, after all retries."""

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


class APITimeoutError(APIConnectionError):
    """A request timed out on every attempt."""


class APIResponseError(PrivatemodeError):
    """The endpoint answered 2xx with a body that is not a valid embeddings response."""


class APIStatusError(PrivatemodeError):
    """The endpoint answered with an HTTP error status (after retries, when it is retryable).

    `message`, `type`, `param` and `code` come from the OpenAI-shaped error body when there is
    one. `input_index` is the index, in the caller's list, of the input the error names (the
    server counts within one request; the client translates that to the caller's position).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        input_index: int | None = None,
        attempts: int = 1,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = error_type
        self.param = param
        self.code = code
        self.input_index = input_index
        self.attempts = attempts
        self.body = body

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code}, message={self.message!r})"


class BadRequestError(APIStatusError):
    """400: the request is invalid (bad model, bad `dimensions`, an input that is too long...)."""


class InputTooLongError(BadRequestError):
    """Inputs exceed the model's token limit; `input_index` names the first, `input_indices` all.

    The client checks a whole call before sending anything; then `attempts` is 0 and
    `status_code` is the 400 the server would have answered. Otherwise the server found one.
    """

    def __init__(self, message: str, *, input_indices: Sequence[int] = (), **fields: Any) -> None:
        super().__init__(message, **fields)
        if not input_indices and self.input_index is not None:
            input_indices = (self.input_index,)
        self.input_indices = tuple(input_indices)


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403."""


class NotFoundError(APIStatusError):
    """404: usually an unknown model, or a base URL without `/v1`."""


class RateLimitError(APIStatusError):
    """429 after all retries."""


class InternalServerError(APIStatusError):
    """5xx after all retries."""


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The most specific `APIStatusError` subclass for an HTTP status."""
    if status_code >= 500:
        return InternalServerError
    return {
        400: BadRequestError,
        401: AuthenticationError,
        403: PermissionDeniedError,
        404: NotFoundError,
        429: RateLimitError,
    }.get(status_code, APIStatusError)
