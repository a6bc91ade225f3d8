"""The client's retry policy and `Retry-After` parsing: every branch, including the refusals."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from privatemode_integrations import RetryPolicy
from privatemode_integrations._retry import parse_retry_after, tls_failure

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


def _headers(**values: str) -> httpx.Headers:
    return httpx.Headers({k.replace("_", "-"): v for k, v in values.items()})


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert parse_retry_after(_headers(retry_after_ms="1500", retry_after="9")) == 1.5


@pytest.mark.parametrize("millis", ["soon", "-5"])
def test_unusable_retry_after_ms_falls_back_to_retry_after(millis: str) -> None:
    assert parse_retry_after(_headers(retry_after_ms=millis, retry_after="3")) == 3.0


def test_retry_after_seconds() -> None:
    assert parse_retry_after(_headers(retry_after=" 7 ")) == 7.0


def test_retry_after_as_http_date() -> None:
    when = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(_headers(retry_after=when), now=NOW.timestamp()) == 30.0


def test_retry_after_date_in_the_past_is_now() -> None:
    when = format_datetime(NOW - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(_headers(retry_after=when), now=NOW.timestamp()) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        "tomorrow-ish",  # neither seconds nor a date
        "Wed, 02 Dec 2026 12:00:30",  # a date without a zone: ambiguous, ignored
        "-4",  # negative seconds
    ],
)
def test_unusable_retry_after_is_ignored(value: str) -> None:
    assert parse_retry_after(_headers(retry_after=value), now=NOW.timestamp()) is None


def test_no_retry_after_header() -> None:
    assert parse_retry_after(httpx.Headers()) is None


def test_policy_uses_the_servers_time_capped() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.delay(1, 12.5) == 12.5
    assert policy.delay(1, 3600.0) == 60.0


def test_policy_backoff_doubles_within_jitter_and_cap() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0, jitter=0.25)
    for retry, full in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 8.0), (10, 8.0)]:
        delay = policy.delay(retry)
        assert full * 0.75 <= delay <= full


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"initial_delay": -0.1}, "delays"),
        ({"max_delay": -1.0}, "delays"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_policy_refuses_impossible_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_tls_failure_found_behind_wrappers_and_absent_otherwise() -> None:
    cause = ssl.SSLError("wrong version number")
    wrapped = httpx.ConnectError("handshake failed")
    wrapped.__cause__ = cause
    assert tls_failure(wrapped) is cause
    assert tls_failure(httpx.ConnectError("refused")) is None
