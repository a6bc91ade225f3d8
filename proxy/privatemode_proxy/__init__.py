"""privatemode-proxy: an attested, encrypting OpenAI-compatible proxy for Privatemode.

The public names load on first use, so that a light submodule (the model catalogue, the batch
splitter) can be imported by the client classes without pulling in the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "BatchLimits": "_batching",
    "TokenCounter": "_batching",
    "split_batches": "_batching",
    "CATALOGUE": "_catalogue",
    "DEFAULT_REMOTE_MODEL_ID": "_catalogue",
    "LOCAL_MODEL_ID": "_catalogue",
    "ModelInfo": "_catalogue",
    "estimate_tokens": "_catalogue",
    "RateLimits": "_pacing",
    "ProxyConfig": "_service",
    "create_proxy_app": "_server",
    "AttestationFailed": "_exceptions",
    "ManifestProvider": "_session",
    "SecretExchangeFailed": "_exceptions",
    "SessionConfig": "_session",
    "UpstreamError": "_exceptions",
    "UpstreamSession": "_session",
    "UpstreamUnavailable": "_exceptions",
    "pinned_manifest": "_session",
    "LocalStack": "_stack",
}

if TYPE_CHECKING:
    from privatemode_proxy._batching import BatchLimits, TokenCounter, split_batches
    from privatemode_proxy._catalogue import (
        CATALOGUE,
        DEFAULT_REMOTE_MODEL_ID,
        LOCAL_MODEL_ID,
        ModelInfo,
        estimate_tokens,
    )
    from privatemode_proxy._exceptions import (
        AttestationFailed,
        SecretExchangeFailed,
        UpstreamError,
        UpstreamUnavailable,
    )
    from privatemode_proxy._pacing import RateLimits
    from privatemode_proxy._server import create_proxy_app
    from privatemode_proxy._service import ProxyConfig
    from privatemode_proxy._session import (
        ManifestProvider,
        SessionConfig,
        UpstreamSession,
        pinned_manifest,
    )
    from privatemode_proxy._stack import LocalStack


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'privatemode_proxy' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"privatemode_proxy.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CATALOGUE",
    "DEFAULT_REMOTE_MODEL_ID",
    "LOCAL_MODEL_ID",
    "AttestationFailed",
    "BatchLimits",
    "LocalStack",
    "ManifestProvider",
    "ModelInfo",
    "ProxyConfig",
    "RateLimits",
    "SecretExchangeFailed",
    "SessionConfig",
    "TokenCounter",
    "UpstreamError",
    "UpstreamSession",
    "UpstreamUnavailable",
    "__version__",
    "create_proxy_app",
    "estimate_tokens",
    "pinned_manifest",
    "split_batches",
]
