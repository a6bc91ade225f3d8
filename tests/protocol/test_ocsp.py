"""NVIDIA OCSP policy headers (protocol §4), checked against values computed with openssl."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta, timezone

import pytest
from privatemode_proxy.protocol import (
    NVIDIA_OCSP_POLICY_HEADER,
    NVIDIA_OCSP_POLICY_MAC_HEADER,
    nvidia_ocsp_policy_headers,
)

SECRET = bytes(range(32))
NOW = datetime(2025, 1, 1, tzinfo=UTC)  # unix 1735689600


def test_header_names() -> None:
    assert NVIDIA_OCSP_POLICY_HEADER == "Privatemode-NVIDIA-OCSP-Policy"
    assert NVIDIA_OCSP_POLICY_MAC_HEADER == "Privatemode-NVIDIA-OCSP-Policy-MAC"


def test_defaults_known_answer() -> None:
    """Defaults: allow unknown, 48 h grace. MAC from
    `printf '%s' POLICY | openssl dgst -sha256 -mac HMAC -macopt hexkey:0001…1f`."""
    headers = nvidia_ocsp_policy_headers(SECRET, now=NOW)
    assert headers == {
        "Privatemode-NVIDIA-OCSP-Policy": (
            "rules=allow-good,allow-revoked,allow-unknown; revocation-time-not-before=1735516800"
        ),
        "Privatemode-NVIDIA-OCSP-Policy-MAC": (
            "e9ff0a455e90410370b0cea2f1ceb413d49d2de401a8aa21bd7466746097036a"
        ),
    }


def test_strict_policy_known_answer() -> None:
    headers = nvidia_ocsp_policy_headers(
        SECRET, allow_unknown=False, revoked_grace_period=timedelta(0), now=NOW
    )
    assert headers[NVIDIA_OCSP_POLICY_HEADER] == (
        "rules=allow-good; revocation-time-not-before=1735689600"
    )
    assert headers[NVIDIA_OCSP_POLICY_MAC_HEADER] == (
        "3db4eb65387de1e7fd7f55f6cde9f9e1f865f7cc82fbe4f74a9654c3d98d003f"
    )


@pytest.mark.parametrize(
    ("allow_unknown", "grace", "rules"),
    [
        (True, timedelta(hours=48), "allow-good,allow-revoked,allow-unknown"),
        (False, timedelta(hours=48), "allow-good,allow-revoked"),
        (True, timedelta(0), "allow-good,allow-unknown"),
        (False, timedelta(0), "allow-good"),
        (False, timedelta(seconds=1), "allow-good,allow-revoked"),
    ],
)
def test_rules(allow_unknown: bool, grace: timedelta, rules: str) -> None:
    policy = nvidia_ocsp_policy_headers(
        SECRET, allow_unknown=allow_unknown, revoked_grace_period=grace, now=NOW
    )[NVIDIA_OCSP_POLICY_HEADER]
    expected_time = 1735689600 - int(grace.total_seconds())
    assert policy == f"rules={rules}; revocation-time-not-before={expected_time}"


def test_time_is_rounded_down_to_whole_seconds() -> None:
    now = datetime(2025, 1, 1, 0, 0, 0, 999999, tzinfo=UTC)
    policy = nvidia_ocsp_policy_headers(SECRET, revoked_grace_period=timedelta(0), now=now)[
        NVIDIA_OCSP_POLICY_HEADER
    ]
    assert policy.endswith("revocation-time-not-before=1735689600")
    # A half-second grace period crosses into the previous second.
    policy = nvidia_ocsp_policy_headers(
        SECRET, revoked_grace_period=timedelta(milliseconds=500), now=NOW
    )[NVIDIA_OCSP_POLICY_HEADER]
    assert policy.endswith("revocation-time-not-before=1735689599")


def test_other_timezones_mean_the_same_instant() -> None:
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))
    assert nvidia_ocsp_policy_headers(SECRET, now=tokyo) == nvidia_ocsp_policy_headers(
        SECRET, now=NOW
    )


def test_default_now_is_the_current_time() -> None:
    before = int(datetime.now(UTC).timestamp()) - 48 * 3600
    policy = nvidia_ocsp_policy_headers(SECRET)[NVIDIA_OCSP_POLICY_HEADER]
    after = int(datetime.now(UTC).timestamp()) - 48 * 3600
    stamp = int(policy.rsplit("=", 1)[1])
    assert before <= stamp <= after


def _server_side_verify(policy: str, mac: str, secret: bytes) -> tuple[list[str], int]:
    """What the backend does (the official UnmarshalAndVerify): parse, re-marshal, compare MAC."""
    parts = policy.split("; ")
    assert len(parts) == 2
    assert parts[0].startswith("rules=") and parts[1].startswith("revocation-time-not-before=")
    rules = parts[0].removeprefix("rules=").split(",")
    assert set(rules) <= {"allow-good", "allow-unknown", "allow-revoked"}
    not_before = int(parts[1].removeprefix("revocation-time-not-before="))
    remarshaled = f"rules={','.join(rules)}; revocation-time-not-before={not_before}"
    expected = hmac.new(secret, remarshaled.encode(), hashlib.sha256).hexdigest()
    if expected != mac:
        raise ValueError("HMAC verification failed")
    return rules, not_before


def test_backend_accepts_the_headers_and_refuses_changes() -> None:
    headers = nvidia_ocsp_policy_headers(SECRET, now=NOW)
    policy, mac = headers[NVIDIA_OCSP_POLICY_HEADER], headers[NVIDIA_OCSP_POLICY_MAC_HEADER]
    assert _server_side_verify(policy, mac, SECRET) == (
        ["allow-good", "allow-revoked", "allow-unknown"],
        1735516800,
    )
    with pytest.raises(ValueError, match="HMAC"):
        _server_side_verify(policy.replace("1735516800", "1735516801"), mac, SECRET)
    with pytest.raises(ValueError, match="HMAC"):
        _server_side_verify(policy, mac, bytes(32))


def test_mac_depends_on_the_secret() -> None:
    a = nvidia_ocsp_policy_headers(SECRET, now=NOW)
    b = nvidia_ocsp_policy_headers(bytes(32), now=NOW)
    assert a[NVIDIA_OCSP_POLICY_HEADER] == b[NVIDIA_OCSP_POLICY_HEADER]
    assert a[NVIDIA_OCSP_POLICY_MAC_HEADER] != b[NVIDIA_OCSP_POLICY_MAC_HEADER]
    assert len(a[NVIDIA_OCSP_POLICY_MAC_HEADER]) == 64
    assert SECRET.hex() not in str(a)


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_secret_must_be_32_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        nvidia_ocsp_policy_headers(b"\x00" * size, now=NOW)


def test_negative_grace_period_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        nvidia_ocsp_policy_headers(SECRET, revoked_grace_period=timedelta(seconds=-1), now=NOW)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        nvidia_ocsp_policy_headers(SECRET, now=datetime(2025, 1, 1))


def test_grace_period_must_be_a_timedelta() -> None:
    with pytest.raises(TypeError, match="timedelta"):
        nvidia_ocsp_policy_headers(SECRET, revoked_grace_period=3600, now=NOW)  # type: ignore[arg-type]
