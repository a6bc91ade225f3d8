"""Certificate and manifest sources: the AMD KDS cache and the expected-manifest source.

AMD's KDS and Privatemode's CDN cannot be reached from here, so their HTTP side is a fake
transport (httpx.MockTransport), named as such; everything else - parsing, caching on disk,
logging, and the verifier using what the sources return - is the real code.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from attestation_support import NONCE, rebuild_response
from privatemode_proxy.attestation import (
    AttestationError,
    CertificateSource,
    CertificateUnavailableError,
    KdsCertificateCache,
    ManifestSource,
    SnpAttestation,
    StaticCertificateSource,
    verify_attestation,
)
from privatemode_proxy.attestation._evidence import load_crl
from privatemode_proxy.local._issuer import LocalIdentity


class FakeKds:
    """A fake of AMD's KDS (unreachable here): serves given bodies by path, counts requests."""

    def __init__(self, routes: dict[str, tuple[int, bytes]]) -> None:
        self.routes = routes
        self.requests: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        target = request.url.path + (f"?{request.url.query.decode()}" if request.url.query else "")
        self.requests.append(target)
        status, body = self.routes.get(target, (404, b"not found"))
        return httpx.Response(status, content=body)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))


def _vcek_path(identity: LocalIdentity) -> str:
    t = identity.tcb
    return (
        f"/vcek/v1/Genoa/{identity.chip_id.hex()}"
        f"?blSPL={t.bl}&teeSPL={t.tee}&snpSPL={t.snp}&ucodeSPL={t.ucode}"
    )


def test_kds_cache_fetches_once_and_keeps_the_vcek_on_disk(
    tmp_path: Path, identity: LocalIdentity
) -> None:
    fake = FakeKds({_vcek_path(identity): (200, identity.vcek_der)})
    cache = KdsCertificateCache(tmp_path, client=fake.client())
    assert isinstance(cache, CertificateSource)
    assert cache.vcek("Genoa", identity.chip_id, identity.tcb) == identity.vcek_der
    assert cache.vcek("Genoa", identity.chip_id, identity.tcb) == identity.vcek_der
    assert fake.requests == [_vcek_path(identity)]
    cached = list((tmp_path / "kds" / "vcek" / "Genoa").iterdir())
    assert len(cached) == 1
    assert cached[0].read_bytes() == identity.vcek_der
    # A new cache on the same workspace needs no network at all.
    offline = FakeKds({})
    again = KdsCertificateCache(tmp_path, client=offline.client())
    assert again.vcek("Genoa", identity.chip_id, identity.tcb) == identity.vcek_der
    assert offline.requests == []


def test_kds_cache_rejects_bad_answers_and_caches_nothing(
    tmp_path: Path, identity: LocalIdentity
) -> None:
    fake = FakeKds(
        {
            _vcek_path(identity): (200, b"<html>rate limited</html>"),
            "/vcek/v1/Genoa/crl": (200, b"garbage"),
            "/vcek/v1/Genoa/cert_chain": (200, b"-----BEGIN CERTIFICATE-----\nAA==\n"),
        }
    )
    cache = KdsCertificateCache(tmp_path, client=fake.client())
    with pytest.raises(CertificateUnavailableError, match="bad VCEK"):
        cache.vcek("Genoa", identity.chip_id, identity.tcb)
    with pytest.raises(CertificateUnavailableError, match="bad CRL"):
        cache.crl("Genoa")
    with pytest.raises(CertificateUnavailableError, match="bad cert chain"):
        cache.cert_chain("Genoa")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_kds_cache_retries_only_transient_errors(tmp_path: Path, identity: LocalIdentity) -> None:
    fake = FakeKds({"/vcek/v1/Genoa/crl": (429, b"slow down")})
    cache = KdsCertificateCache(tmp_path, client=fake.client(), attempts=3, retry_delay=0)
    with pytest.raises(CertificateUnavailableError, match="HTTP 429"):
        cache.crl("Genoa")
    assert len(fake.requests) == 3
    fake = FakeKds({})
    cache = KdsCertificateCache(tmp_path, client=fake.client(), attempts=3, retry_delay=0)
    with pytest.raises(CertificateUnavailableError, match="HTTP 404"):
        cache.crl("Genoa")
    assert len(fake.requests) == 1
    with pytest.raises(CertificateUnavailableError, match="invalid product line"):
        cache.crl("../Genoa")
    with pytest.raises(CertificateUnavailableError, match="chip id is 8 bytes"):
        cache.vcek("Genoa", bytes(8), identity.tcb)


def test_kds_cache_refreshes_an_expired_crl(tmp_path: Path, identity: LocalIdentity) -> None:
    crl = identity.crl_der()
    next_update = load_crl(crl).next_update_utc
    assert next_update is not None
    fake = FakeKds({"/vcek/v1/Genoa/crl": (200, crl)})
    now = [datetime.now(UTC)]
    cache = KdsCertificateCache(tmp_path, client=fake.client(), clock=lambda: now[0])
    assert cache.crl("Genoa") == crl
    assert cache.crl("Genoa") == crl
    assert len(fake.requests) == 1
    now[0] = next_update + timedelta(seconds=1)
    assert cache.crl("Genoa") == crl
    assert len(fake.requests) == 2


def test_kds_cache_serves_the_cert_chain(tmp_path: Path, snp_dir: Path) -> None:
    body = (snp_dir / "amd-roots" / "ask_ark_genoa.pem").read_bytes()
    fake = FakeKds({"/vcek/v1/Genoa/cert_chain": (200, body)})
    cache = KdsCertificateCache(tmp_path, client=fake.client())
    assert cache.cert_chain("Genoa") == body
    assert (tmp_path / "kds" / "cert_chain" / "Genoa.pem").read_bytes() == body


def test_verifier_fills_in_the_vcek_and_crl_from_the_kds_cache(
    tmp_path: Path, identity: LocalIdentity
) -> None:
    def strip(attestation: SnpAttestation) -> SnpAttestation:
        assert attestation.certificate_chain is not None
        chain = replace(attestation.certificate_chain, vcek_cert=b"", extras={})
        return replace(attestation, certificate_chain=chain)

    document = rebuild_response(identity.attestation_doc(NONCE), evidence=strip)
    fake = FakeKds(
        {
            _vcek_path(identity): (200, identity.vcek_der),
            "/vcek/v1/Genoa/crl": (200, identity.crl_der()),
        }
    )
    cache = KdsCertificateCache(tmp_path, client=fake.client())
    result = verify_attestation(
        NONCE,
        document,
        expected_manifest=identity.manifest_bytes,
        trusted_roots=[identity.trusted_root()],
        certificates=cache,
    )
    assert result.product == "Genoa"
    assert sorted(fake.requests) == sorted([_vcek_path(identity), "/vcek/v1/Genoa/crl"])


def test_static_certificate_source_matches_chip_and_tcb(identity: LocalIdentity) -> None:
    source = StaticCertificateSource(vceks=[b"junk", identity.vcek_der])
    assert source.vcek("Genoa", identity.chip_id, identity.tcb) == identity.vcek_der
    with pytest.raises(CertificateUnavailableError):
        source.vcek("Genoa", bytes(64), identity.tcb)
    with pytest.raises(CertificateUnavailableError):
        source.vcek("Milan", identity.chip_id, identity.tcb)
    with pytest.raises(CertificateUnavailableError):
        source.cert_chain("Genoa")


# ---------------------------------------------------------------------------------------------
# ManifestSource
# ---------------------------------------------------------------------------------------------


class FakeCdn:
    """A fake of Privatemode's CDN (unreachable here)."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body, self.status = body, status
        self.requests: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(str(request.url))
        return httpx.Response(self.status, content=self.body)


async def test_pinned_manifest(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(b'{"pinned": true}')
    source = ManifestSource.pinned(path)
    assert await source.get() == b'{"pinned": true}'
    async with httpx.AsyncClient() as client:
        assert await source.provider()(client) == b'{"pinned": true}'
    assert source.get_sync() == b'{"pinned": true}'
    missing = ManifestSource.pinned(tmp_path / "nope.json")
    with pytest.raises(AttestationError) as info:
        await missing.get()
    assert info.value.checks == {"EXPECTED_MANIFEST"}


async def test_cdn_manifest_is_logged_and_changes_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cdn = FakeCdn(b'{"v": 1}')
    source = ManifestSource.from_cdn("https://cdn.example/privatemode/v2/", tmp_path)
    async with httpx.AsyncClient(transport=httpx.MockTransport(cdn.handler)) as client:
        assert await source.get(client) == b'{"v": 1}'
        assert await source.get(client) == b'{"v": 1}'
        assert cdn.requests == ["https://cdn.example/privatemode/v2/manifest.json"] * 2
        entries = source.log_entries()
        assert len(entries) == 1  # the same manifest is logged once
        first = hashlib.sha256(b'{"v": 1}').hexdigest()
        assert entries[0].sha256 == first
        assert entries[0].previous_sha256 is None
        assert (tmp_path / "manifests" / entries[0].file).read_bytes() == b'{"v": 1}'

        cdn.body = b'{"v": 2}'
        with caplog.at_level(logging.WARNING):
            assert await source.get(client) == b'{"v": 2}'
        second = hashlib.sha256(b'{"v": 2}').hexdigest()
        assert any("CHANGED" in r.message and first in r.message for r in caplog.records)
        assert any(second in r.message for r in caplog.records)
        entries = source.log_entries()
        assert [e.sha256 for e in entries] == [first, second]
        assert entries[1].previous_sha256 == first
        lines = (tmp_path / "manifests" / "log.jsonl").read_text().splitlines()
        assert [json.loads(line)["sha256"] for line in lines] == [first, second]


async def test_cdn_failures_fail_closed_and_log_nothing(tmp_path: Path) -> None:
    source = ManifestSource.from_cdn(None, tmp_path)
    assert source.manifest_url == "https://cdn.confidential.cloud/privatemode/v2/manifest.json"
    for cdn in (FakeCdn(b"oops", status=503), FakeCdn(b"")):
        async with httpx.AsyncClient(transport=httpx.MockTransport(cdn.handler)) as client:
            with pytest.raises(AttestationError) as info:
                await source.get(client)
        assert info.value.checks == {"EXPECTED_MANIFEST"}
    assert source.log_entries() == []

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route", request=request)

    with httpx.Client(transport=httpx.MockTransport(unreachable)) as sync_client:
        with pytest.raises(AttestationError, match="cannot fetch"):
            source.get_sync(sync_client)


def test_manifest_source_needs_one_origin(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ManifestSource()
    with pytest.raises(ValueError, match="workspace"):
        ManifestSource(cdn_url="https://cdn.example")
