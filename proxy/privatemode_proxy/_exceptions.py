"""The proxy's exceptions, and where every other error of the package lives.

    Exception
    ├── openai.ApiError ............... an answer in OpenAI's error shape: `status_code`, `type`,
    │   │                               `param`, `code`, `input_index` (openai/_errors.py)
    │   ├── UpstreamError ............. the upstream could not be used for this request (502)
    │   │   ├── UpstreamUnavailable ... no verified secret (503)
    │   │   │   ├── AttestationFailed
    │   │   │   └── SecretExchangeFailed
    │   │   ├── UpstreamTimeout ....... (504)
    │   │   └── UpstreamAuthError ..... the service refused the key (401) or its use (403)
    │   └── local.RateLimitExceeded ... the local backend's 429 (local/_ratelimit.py)
    ├── ValueError
    │   ├── openai.VectorFormatError .. an embeddings answer that is not one vector per input
    │   ├── protocol.HpkeError, protocol.SecretExchangeError
    │   ├── protocol.FieldCipherError
    │   │   └── protocol.UnknownSecretError .. "no secret for ID"
    │   ├── attestation.EvidenceError . malformed evidence (attestation/_errors.py)
    │   │   └── attestation.ManifestError
    │   └── PortInUseError (_serving.py), ConfigError (_cli.py)
    ├── attestation.AttestationError .. a failed check, `failures` says which (attestation/_errors)
    │   └── attestation.CollateralUnavailableError .. a collateral fetch that may pass later
    ├── attestation.CertificateUnavailableError > CertificateFetchError (attestation/_kds.py)
    ├── PacingRefused (_pacing.py), Refused (_admission.py) .. answered as 429 / 413 / 503
    └── RuntimeError > local.BackendStopping (local/_batcher.py)

The session raises the `UpstreamError` family; the server answers each with its status, type and
code. Messages never contain API keys, secrets or input texts.
"""

from __future__ import annotations

from privatemode_proxy.openai import ApiError


class UpstreamError(ApiError):
    """The upstream could not be used for this request; `status_code` is what the proxy answers."""

    default_status = 502
    default_type = "upstream_error"
    default_code = "upstream_error"

    def __init__(self, message: str) -> None:
        super().__init__(
            self.default_status, message, type=self.default_type, code=self.default_code
        )


class UpstreamUnavailable(UpstreamError):
    """No verified secret: attestation or the secret exchange failed (the proxy answers 503)."""

    default_status = 503
    default_type = "service_unavailable"
    default_code = "upstream_unavailable"


class AttestationFailed(UpstreamUnavailable):
    default_code = "attestation_failed"

    def __init__(self, message: str, *, final: bool = True) -> None:
        super().__init__(message)
        self.final = final
        """False when the attestation could not be fetched (worth retrying)."""


class SecretExchangeFailed(UpstreamUnavailable):
    default_code = "secret_exchange_failed"


class UpstreamTimeout(UpstreamError):
    default_status = 504
    default_code = "upstream_timeout"


class UpstreamAuthError(UpstreamError):
    """The API refused the key (401) or its use (403): the app's to fix, never retried.

    The proxy answers with the same status and the service's message.
    """

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.type = "authentication_error" if status_code == 401 else "permission_error"
        self.code = "invalid_api_key" if status_code == 401 else "forbidden"


for _public in (UpstreamError, UpstreamUnavailable, AttestationFailed, SecretExchangeFailed):
    _public.__module__ = "privatemode_proxy"  # tracebacks name the public package
