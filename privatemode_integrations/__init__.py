"""Confidential embeddings for LangChain and LlamaIndex, through the Privatemode proxy.

`PrivatemodeEmbeddings` (LangChain) and `PrivatemodeEmbedding` (LlamaIndex) share one client core,
`EmbeddingsClient`, which posts to the proxy's OpenAI-compatible `/v1/embeddings`.
"""

from typing import TYPE_CHECKING, Any

from privatemode_integrations._batching import ModelLimits
from privatemode_integrations._client import EmbeddingsClient
from privatemode_integrations._errors import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InputTooLongError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    PrivatemodeError,
    RateLimitError,
)
from privatemode_integrations._retry import RetryPolicy

# Public names say where to import them from (tracebacks, reprs, pickles), not which private
# module defines them.
for _public in (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    EmbeddingsClient,
    InputTooLongError,
    InternalServerError,
    ModelLimits,
    NotFoundError,
    PermissionDeniedError,
    PrivatemodeError,
    RateLimitError,
    RetryPolicy,
):
    _public.__module__ = __name__
del _public

if TYPE_CHECKING:
    from privatemode_integrations._langchain import PrivatemodeEmbeddings
    from privatemode_integrations._llamaindex import PrivatemodeEmbedding


def __getattr__(name: str) -> Any:
    # Each framework class is imported on first use, so a LangChain app does not pay for
    # importing LlamaIndex (about a second) and the other way round.
    if name == "PrivatemodeEmbeddings":
        from privatemode_integrations._langchain import PrivatemodeEmbeddings

        return PrivatemodeEmbeddings
    if name == "PrivatemodeEmbedding":
        from privatemode_integrations._llamaindex import PrivatemodeEmbedding

        return PrivatemodeEmbedding
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "APIConnectionError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "EmbeddingsClient",
    "InputTooLongError",
    "InternalServerError",
    "ModelLimits",
    "NotFoundError",
    "PermissionDeniedError",
    "PrivatemodeEmbedding",
    "PrivatemodeEmbeddings",
    "PrivatemodeError",
    "RateLimitError",
    "RetryPolicy",
]
