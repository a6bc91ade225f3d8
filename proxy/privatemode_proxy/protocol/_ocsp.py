"""NVIDIA OCSP policy headers of inference requests (protocol §4).

The policy tells the backend which OCSP statuses of its GPU attestation the client accepts:
``rules=allow-good[,allow-revoked][,allow-unknown]; revocation-time-not-before=<unix seconds>``,
where the time is now minus the grace period for revoked certificates and ``allow-revoked`` is
listed only with a grace period above zero. The MAC header is the hex HMAC-SHA256 of the policy
text keyed with the inference secret, so the policy can't be loosened on the way.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

__all__ = [
    "NVIDIA_OCSP_POLICY_HEADER",
    "NVIDIA_OCSP_POLICY_MAC_HEADER",
    "nvidia_ocsp_policy_headers",
]

NVIDIA_OCSP_POLICY_HEADER = "Privatemode-NVIDIA-OCSP-Policy"
NVIDIA_OCSP_POLICY_MAC_HEADER = "Privatemode-NVIDIA-OCSP-Policy-MAC"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECRET_SIZE = 32


def nvidia_ocsp_policy_headers(
    secret: bytes,
    *,
    allow_unknown: bool = True,
    revoked_grace_period: timedelta = timedelta(hours=48),
    now: datetime | None = None,
) -> dict[str, str]:
    """The two OCSP policy headers for a request sent under ``secret`` (32 bytes)."""
    if not isinstance(secret, (bytes, bytearray, memoryview)) or len(secret) != _SECRET_SIZE:
        raise ValueError(f"secret must be {_SECRET_SIZE} bytes")
    if not isinstance(revoked_grace_period, timedelta):
        raise TypeError("revoked_grace_period must be a timedelta")
    if revoked_grace_period < timedelta(0):
        raise ValueError("revoked_grace_period must not be negative")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")

    rules = ["allow-good"]
    if revoked_grace_period > timedelta(0):
        rules.append("allow-revoked")
    if allow_unknown:
        rules.append("allow-unknown")
    # Whole seconds, rounded down like Go's time.Time.Unix(); integer arithmetic, no float.
    not_before = (now - revoked_grace_period - _EPOCH) // timedelta(seconds=1)
    policy = f"rules={','.join(rules)}; revocation-time-not-before={not_before}"
    mac = hmac.new(bytes(secret), policy.encode("ascii"), hashlib.sha256).hexdigest()
    return {NVIDIA_OCSP_POLICY_HEADER: policy, NVIDIA_OCSP_POLICY_MAC_HEADER: mac}
