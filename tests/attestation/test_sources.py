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
    CertificateFetchError,
    CertificateSource,
    CertificateUnavailableError,
    KdsCertificateCache,
    ManifestSource,
    SnpAttestation,
    StaticCertificateSource,
    verify_attestation,
)
from privatemode_proxy.attestation._x509 import (
    load_crl,
)
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
        }
    )
    cache = KdsCertificateCache(tmp_path, client=fake.client())
    with pytest.raises(CertificateUnavailableError, match="bad VCEK"):
        cache.vcek("Genoa", identity.chip_id, identity.tcb)
    with pytest.raises(CertificateUnavailableError, match="bad CRL"):
        cache.crl("Genoa")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_kds_cache_retries_only_transient_errors(tmp_path: Path, identity: LocalIdentity) -> None:
    fake = FakeKds({"/vcek/v1/Genoa/crl": (429, b"slow down")})
    cache = KdsCertificateCache(tmp_path, client=fake.client(), attempts=3, retry_delay=0)
    with pytest.raises(CertificateFetchError, match="HTTP 429"):
        cache.crl("Genoa")
    assert len(fake.requests) == 3
    fake = FakeKds({})
    cache = KdsCertificateCache(tmp_path, client=fake.client(), attempts=3, retry_delay=0)
    with pytest.raises(CertificateUnavailableError, match="HTTP 404") as info:
        cache.crl("Genoa")
    assert not isinstance(info.value, CertificateFetchError)  # a 404 is final
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


def _cdn_source(tmp_path: Path, now: list[datetime]) -> ManifestSource:
    return ManifestSource("https://cdn.example/privatemode/v2/", tmp_path, clock=lambda: now[0])


async def test_cdn_manifest_official_log_layout_and_cache_busting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)]
    cdn = FakeCdn(b'{"v": 1}')
    source = _cdn_source(tmp_path, now)
    async with httpx.AsyncClient(transport=httpx.MockTransport(cdn.handler)) as client:
        assert await source.get(client) == b'{"v": 1}'
        now[0] += timedelta(minutes=5)
        assert await source.get(client) == b'{"v": 1}'
        ms = int(datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC).timestamp() * 1000)
        assert cdn.requests == [
            f"https://cdn.example/privatemode/v2/manifest.json?t={ms}",
            f"https://cdn.example/privatemode/v2/manifest.json?t={ms + 300_000}",
        ]
        directory = tmp_path / "manifests"
        # One line per fetch; one file per distinct manifest.
        assert (directory / "log.txt").read_text().splitlines() == [
            f"2026-01-02T03:04:05Z {directory / '1.json'}",
            f"2026-01-02T03:09:05Z {directory / '1.json'}",
        ]
        assert (directory / "1.json").read_bytes() == b'{"v": 1}'
        first = hashlib.sha256(b'{"v": 1}').hexdigest()

        cdn.body = b'{"v": 2}'
        with caplog.at_level(logging.WARNING):
            assert await source.get(client) == b'{"v": 2}'
        second = hashlib.sha256(b'{"v": 2}').hexdigest()
        assert any("CHANGED" in r.message and first in r.message for r in caplog.records)
        assert any(second in r.message for r in caplog.records)
        assert (directory / "2.json").read_bytes() == b'{"v": 2}'
        entries = source.log_entries()
        assert [e.sha256 for e in entries] == [first, first, second]
        assert [e.path.name for e in entries] == ["1.json", "1.json", "2.json"]


async def test_an_official_proxy_log_is_extended_not_rewritten(tmp_path: Path) -> None:
    directory = tmp_path / "manifests"
    directory.mkdir()
    (directory / "1.json").write_bytes(b'{"theirs": 1}')
    (directory / "2.json").write_bytes(b'{"theirs": 2}')
    theirs = (
        f"2025-11-30T10:00:00+01:00 {directory / '1.json'}\n"
        "2025-12-01T10:00:00+01:00 2.json\n"  # a relative path is read against the directory
    )
    (directory / "log.txt").write_text(theirs)
    now = [datetime(2026, 1, 2, tzinfo=UTC)]
    source = _cdn_source(tmp_path, now)
    cdn = FakeCdn(b'{"theirs": 2}')
    async with httpx.AsyncClient(transport=httpx.MockTransport(cdn.handler)) as client:
        await source.get(client)
        cdn.body = b'{"ours": 3}'
        await source.get(client)
    text = (directory / "log.txt").read_text()
    assert text.startswith(theirs)
    assert text[len(theirs) :].splitlines() == [
        f"2026-01-02T00:00:00Z {directory / '2.json'}",  # unchanged: the same file
        f"2026-01-02T00:00:00Z {directory / '3.json'}",
    ]
    assert [e.sha256 for e in source.log_entries()] == [
        hashlib.sha256(b).hexdigest()
        for b in (b'{"theirs": 1}', b'{"theirs": 2}', b'{"theirs": 2}', b'{"ours": 3}')
    ]


async def test_our_earlier_jsonl_log_is_carried_over(tmp_path: Path) -> None:
    directory = tmp_path / "manifests"
    directory.mkdir()
    old = []
    for stamp, body in (("20251101T000000Z", b'{"a": 1}'), ("20251201T000000Z", b'{"a": 2}')):
        digest = hashlib.sha256(body).hexdigest()
        file = f"{stamp}_{digest[:16]}.json"
        (directory / file).write_bytes(body)
        old.append({"time": stamp, "sha256": digest, "url": "u", "file": file})
    (directory / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in old))
    source = _cdn_source(tmp_path, [datetime(2026, 1, 2, tzinfo=UTC)])
    cdn = FakeCdn(b'{"a": 2}')
    async with httpx.AsyncClient(transport=httpx.MockTransport(cdn.handler)) as client:
        await source.get(client)
    entries = source.log_entries()
    assert [e.time for e in entries] == [
        "20251101T000000Z",
        "20251201T000000Z",
        "2026-01-02T00:00:00Z",
    ]
    assert [e.path.name for e in entries] == ["1.json", "2.json", "2.json"]
    assert (directory / "1.json").read_bytes() == b'{"a": 1}'
    assert not (directory / "log.jsonl").exists()
    assert (directory / "log.jsonl.migrated").exists()  # kept, not deleted


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

    async with httpx.AsyncClient(transport=httpx.MockTransport(unreachable)) as client:
        with pytest.raises(AttestationError, match="cannot fetch"):
            await source.provider()(client)
    assert not (tmp_path / "manifests" / "log.txt").exists()


async def test_a_manifest_that_cannot_be_logged_is_not_handed_out(tmp_path: Path) -> None:
    (tmp_path / "manifests").write_text("a file where the directory should be")
    source = _cdn_source(tmp_path, [datetime(2026, 1, 2, tzinfo=UTC)])
    async with httpx.AsyncClient(transport=httpx.MockTransport(FakeCdn(b"{}").handler)) as c:
        with pytest.raises(AttestationError, match="cannot log the manifest"):
            await source.get(c)
