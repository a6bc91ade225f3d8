"""privatemode-proxy: an attested, encrypting OpenAI-compatible proxy for Privatemode."""

__version__ = "0.1.0"

# The version is set before these imports: the session module sends it upstream.
from privatemode_proxy._batching import BatchLimits, TokenCounter, split_batches
from privatemode_proxy._catalogue import (
    CATALOGUE,
    DEFAULT_REMOTE_MODEL_ID,
    LOCAL_MODEL_ID,
    ModelInfo,
    estimate_tokens,
)
from privatemode_proxy._server import ProxyConfig, create_proxy_app
from privatemode_proxy._session import (
    AttestationFailed,
    ManifestProvider,
    SecretExchangeFailed,
    SessionConfig,
    UpstreamError,
    UpstreamSession,
    UpstreamUnavailable,
    pinned_manifest,
)
from privatemode_proxy._stack import LocalStack

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
