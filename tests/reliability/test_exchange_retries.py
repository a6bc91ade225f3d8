"""Attestation and secret exchange retry what may pass (a CRL that AMD's KDS failed to deliver,
a 5xx), with backoff and jitter, 3 attempts as the official proxy; a manifest mismatch is final.

The stand-in for an evidence without a CRL (so one must be fetched) is the fault relay, which
strips the CRL the local backend attaches; the stand-in for KDS is a certificate source that
fails with a transient fetch error a given number of times, then delivers the backend's CRL.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from privatemode_proxy._session import SessionConfig, UpstreamSession, pinned_manifest
from privatemode_proxy.attestation import (
    AttestationResponse,
    CertificateFetchError,
    SnpAttestation,
    StaticCertificateSource,
)
from privatemode_proxy.attestation._snp import CRL_EXTRA_KEY
from privatemode_proxy.local import LocalBackend
from reliability_relay import (
    Exchange,
    FaultRelay,
    Response,
    b64decode_doc,
    b64encode_doc,
    openai_error,
    respond,
    rewrite,
)
from reliability_support import EMBEDDINGS, TEXTS, embed, start_proxy, vectors_of, wait_upstream

ATTEST = "/privatemode/v1/attest"
SECRET = "/privatemode/v1/secret"


def _strip_crl(_exchange: Exchange, answer: Response) -> Response:
    response = AttestationResponse.from_json(b64decode_doc(answer.body))
    evidence = SnpAttestation.from_proto(response.raw_attestation_doc)
    assert evidence.certificate_chain is not None
    extras = {k: v for k, v in evidence.certificate_chain.extras.items() if k != CRL_EXTRA_KEY}
    evidence = replace(
        evidence, certificate_chain=replace(evidence.certificate_chain, extras=extras)
    )
    document = replace(response, raw_attestation_doc=evidence.to_proto()).to_json()
    return Response(answer.status, b64encode_doc(document), answer.headers)


class FlakyKds(StaticCertificateSource):
    """Stand-in for AMD's KDS: the first `failures` CRL fetches fail as a network error would."""

    def __init__(self, crl: bytes, failures: int) -> None:
        super().__init__(crls={"Genoa": crl})
        self.failures = failures
        self.calls = 0
        self._lock = threading.Lock()

    def crl(self, product_line: str) -> bytes:
        with self._lock:
            self.calls += 1
            if self.calls <= self.failures:
                raise CertificateFetchError("could not fetch CRL: HTTP 503 (KDS stand-in)")
        return super().crl(product_line)


@pytest.mark.parametrize("failures", [1, 2])
def test_transient_crl_failure_is_retried(
    backend: LocalBackend, relay: FaultRelay, failures: int
) -> None:
    relay.on(ATTEST, rewrite(_strip_crl, "strip_crl"), times=None)
    kds = FlakyKds(backend.identity.crl_der(), failures)
    proxy = start_proxy(
        backend,
        api_url=relay.url,
        session_options={"certificates": kds, "exchange_retry_delay_seconds": 0.01},
    )
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        assert kds.calls == failures + 1  # failed, failed, fetched: one attestation each
        assert len(relay.to(ATTEST)) == failures + 1
        assert len(relay.to(SECRET)) == 1
        assert vectors_of(embed(proxy.url, TEXTS[:2])).shape == (2, 384)
    finally:
        proxy.stop()


def test_transient_crl_failure_three_times_fails_after_three_attempts(
    backend: LocalBackend, relay: FaultRelay
) -> None:
    relay.on(ATTEST, rewrite(_strip_crl, "strip_crl"), times=None)
    kds = FlakyKds(backend.identity.crl_der(), failures=10**6)
    proxy = start_proxy(
        backend,
        api_url=relay.url,
        session_options={"certificates": kds, "exchange_retry_delay_seconds": 0.01},
    )
    try:
        health = wait_upstream(proxy.url)
        assert health["upstream"] == "failed"
        assert "KDS stand-in" in health["last_error"]
        assert kds.calls == 3 and len(relay.to(ATTEST)) == 3
        assert relay.to(SECRET) == []
        assert relay.to(EMBEDDINGS) == []
    finally:
        proxy.stop()


def test_manifest_mismatch_is_not_retried(backend: LocalBackend, relay: FaultRelay) -> None:
    manifest = orjson.loads(Path(backend.manifest_path).read_bytes())
    manifest["Policies"] = {}  # another deployment's manifest
    proxy = start_proxy(
        backend,
        api_url=relay.url,
        manifest=orjson.dumps(manifest),
        session_options={"exchange_retry_delay_seconds": 0.01},
    )
    try:
        health = wait_upstream(proxy.url)
        assert health["upstream"] == "failed"
        assert "manifest" in health["last_error"].lower()
        assert len(relay.to(ATTEST)) == 1  # final at once
        assert relay.to(SECRET) == []
        resp = embed(proxy.url, TEXTS[:1])
        assert resp.status_code == 503
        assert relay.to(EMBEDDINGS) == []
    finally:
        proxy.stop()


def test_attest_5xx_is_retried(backend: LocalBackend, relay: FaultRelay) -> None:
    relay.on(ATTEST, respond(503, openai_error("gateway busy")), times=2)
    proxy = start_proxy(
        backend, api_url=relay.url, session_options={"exchange_retry_delay_seconds": 0.01}
    )
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        assert len(relay.to(ATTEST)) == 3
    finally:
        proxy.stop()


def test_backoff_doubles_with_jitter(backend: LocalBackend) -> None:
    config = SessionConfig(
        api_url=backend.url,
        trusted_roots=(),
        manifest=pinned_manifest(b"{}"),
        exchange_retry_delay_seconds=1.0,
    )
    session = UpstreamSession(config)
    for retry, base in ((1, 1.0), (2, 2.0)):
        delays = [session._backoff(retry) for _ in range(200)]
        assert all(base <= d <= base * 1.25 for d in delays)
        assert len(set(delays)) > 1  # jittered, so clients spread out
