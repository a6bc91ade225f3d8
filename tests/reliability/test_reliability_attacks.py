"""Attacks on attestation and the secret exchange, end to end through the proxy.

An attacker on the path (the relay) rewrites the backend's `/attest` or `/secret` answers. Each
forgery is valid in every respect but one (re-signed by the real VCEK, report data bound to what
it carries, certificates issued by the real ASK or mesh CA), so the refusal shows that exactly
that check holds. For each: the proxy refuses to become ready, a client gets 503 with the name of
the failed check, and the backend's `/v1/embeddings` sees nothing (its request log and the
relay's record agree).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from privatemode_proxy.attestation._amd import (
    AMD_PSS_PADDING,
    amd_name,
)
from privatemode_proxy.attestation._snp import (
    CRL_EXTRA_KEY,
)
from privatemode_proxy.local import LocalBackend
from privatemode_proxy.protocol import serve_secret_exchange
from privatemode_proxy.protocol._secretexchange import sign_exchange
from reliability_forge import Forger
from reliability_relay import (
    Exchange,
    FaultRelay,
    Response,
    b64decode_doc,
    b64encode_doc,
    rewrite,
)
from reliability_support import (
    ATTEST,
    EMBEDDINGS,
    SECRET,
    TEXTS,
    embed,
    error_of,
    start_proxy,
    wait_upstream,
)


@pytest.fixture(scope="module")
def forger(rel_backend: LocalBackend) -> Forger:
    return Forger(rel_backend.identity)


@pytest.fixture(scope="module")
def foreign_ask() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """An attacker's own 'AMD' ARK and ASK, with AMD's names (RSA-2048: it is refused anyway)."""
    now = datetime.now(UTC)
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask = (
        x509.CertificateBuilder()
        .subject_name(amd_name("SEV-Genoa"))
        .issuer_name(amd_name("ARK-Genoa"))
        .public_key(ask_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ark_key, hashes.SHA384(), rsa_padding=AMD_PSS_PADDING)
    )
    return ask_key, ask


def _nonce(exchange: Exchange) -> bytes:
    return base64.b64decode(orjson.loads(exchange.body)["Nonce"])


AttestChange = Callable[[Forger, bytes, bytes], bytes]
"""(forger, genuine document for the proxy's nonce, the proxy's nonce) -> forged document."""


def attest_rewrite(forger: Forger, change: AttestChange, label: str) -> Any:
    def apply(exchange: Exchange, answer: Response) -> Response:
        assert answer.status == 200
        document = change(forger, b64decode_doc(answer.body), _nonce(exchange))
        return Response(200, b64encode_doc(document), answer.headers)

    return rewrite(apply, label)


def _measurement(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    _, _, report = f.parts(doc)
    changed = bytes([report.measurement[0] ^ 1]) + report.measurement[1:]
    return f.forge(doc, nonce, measurement=changed)


def _measurement_unsigned(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    _, _, report = f.parts(doc)
    changed = bytes([report.measurement[0] ^ 1]) + report.measurement[1:]
    return f.forge(doc, nonce, resign=False, measurement=changed)


def _other_nonce(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    # Evidence the backend really produced, for a nonce of the attacker's choosing.
    other = hashlib.sha256(nonce).digest()
    return f.identity.attestation_doc(other)  # type: ignore[no-any-return]


def _expired_vcek(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    vcek = f.vcek(
        f.vcek_key.public_key(),
        now=datetime.now(UTC) - timedelta(days=400),
        lifetime=timedelta(days=30),
    )
    return f.forge(doc, nonce, chain=f.chain_with_vcek(doc, vcek))


def _future_vcek(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    vcek = f.vcek(f.vcek_key.public_key(), now=datetime.now(UTC) + timedelta(days=30))
    return f.forge(doc, nonce, chain=f.chain_with_vcek(doc, vcek))


def _other_chips_vcek(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    """A genuine VCEK of another chip (issued by the real ASK) swapped in; the report signed by
    that chip's key. The report's CHIP_ID is still the attested machine's."""
    key = ec.generate_private_key(ec.SECP384R1())
    vcek = f.vcek(key.public_key(), chip_id=bytes(range(64)))
    return f.forge(doc, nonce, vcek_key=key, chain=f.chain_with_vcek(doc, vcek))


def _swapped_vcek_report_unchanged(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    key = ec.generate_private_key(ec.SECP384R1())
    vcek = f.vcek(key.public_key())  # same chip id, other key: the report signature won't match
    return f.forge(doc, nonce, resign=False, chain=f.chain_with_vcek(doc, vcek))


def _manifest_one_byte(manifest: bytes) -> bytes:
    """The manifest with one byte changed that leaves it valid and equivalent: one chip-id hex
    digit in lower case (chip ids are compared as bytes)."""
    text = manifest.decode()
    marker = '"AllowedChipIDs":["'
    start = text.index(marker) + len(marker)
    position = next(i for i in range(start, start + 128) if text[i] in "ABCDEF")
    changed = text[:position] + text[position].lower() + text[position + 1 :]
    assert len(changed) == len(text) and changed != text
    return changed.encode()


def _manifest_differs(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    response, _, _ = f.parts(doc)
    return f.forge(doc, nonce, manifests=(_manifest_one_byte(response.manifests[0]),))


def _two_manifests(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    response, _, _ = f.parts(doc)
    older = _manifest_one_byte(response.manifests[0])
    return f.forge(doc, nonce, manifests=(older, response.manifests[0]))


def _downgrade(version: int) -> AttestChange:
    def change(f: Forger, doc: bytes, nonce: bytes) -> bytes:
        extra: dict[str, Any] = {"version": version}
        if version < 3:
            extra["cpuid1eax_fms"] = 0  # no CPUID bytes before version 3
        return f.forge(doc, nonce, **extra)

    return change


def _foreign_mesh_ca(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    """The attacker's mesh CA put into the response; the report still binds the real one."""
    key = ec.generate_private_key(ec.SECP384R1())
    pem = Forger.ca(key, "system:coordinator:intermediate").public_bytes(serialization.Encoding.PEM)
    response, _, _ = f.parts(doc)
    return replace(response, mesh_ca=pem).to_json()


def _debug_policy(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    _, _, report = f.parts(doc)
    return f.forge(doc, nonce, policy=report.policy | (1 << 19))  # DEBUG allowed


def _tcb_below_minimum(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    _, _, report = f.parts(doc)
    snp_byte = 6  # TCB byte 6 is the SNP firmware SVN on Genoa
    launch = report.launch_tcb - (1 << (8 * snp_byte))
    return f.forge(doc, nonce, launch_tcb=launch)


def _other_host_data(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    return f.forge(doc, nonce, host_data=hashlib.sha256(b"another workload policy").digest())


def _revoked_ask(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    _, attestation, _ = f.parts(doc)
    chain = attestation.certificate_chain
    assert chain is not None
    assert CRL_EXTRA_KEY in chain.extras
    extras = {**chain.extras, CRL_EXTRA_KEY: f.revoking_crl(f.ask.serial_number)}
    return f.forge(doc, nonce, chain=replace(chain, extras=extras))


def _truncated_doc(f: Forger, doc: bytes, nonce: bytes) -> bytes:
    return doc[: len(doc) // 2]


@dataclass(frozen=True)
class AttestAttack:
    change: AttestChange
    check: str | tuple[str, ...]  # the refusal must name this check (or one of these)


ATTEST_ATTACKS: dict[str, AttestAttack] = {
    "measurement-changed": AttestAttack(_measurement, "MEASUREMENT"),
    "measurement-changed-not-resigned": AttestAttack(_measurement_unsigned, "SIGNATURE"),
    "report-data-of-another-nonce": AttestAttack(_other_nonce, "REPORT_DATA"),
    "vcek-expired": AttestAttack(_expired_vcek, "VALIDITY"),
    "vcek-not-yet-valid": AttestAttack(_future_vcek, "VALIDITY"),
    "vcek-of-another-chip": AttestAttack(_other_chips_vcek, "CHIP_ID"),
    "vcek-swapped-report-unchanged": AttestAttack(_swapped_vcek_report_unchanged, "SIGNATURE"),
    "manifest-one-byte-different": AttestAttack(_manifest_differs, "EXPECTED_MANIFEST"),
    "manifest-history-of-two": AttestAttack(_two_manifests, "MANIFEST_HISTORY"),
    "report-version-2": AttestAttack(_downgrade(2), "version 2"),
    # Mitigation vectors are version 5 fields (zero in older reports): a v3/v4 report can't meet
    # the manifest's minimum, whether the verifier reads them as zero or refuses the bytes.
    "report-version-3": AttestAttack(_downgrade(3), ("MITIGATION", "reserved")),
    "report-version-4": AttestAttack(_downgrade(4), ("MITIGATION", "reserved")),
    "mesh-ca-swapped": AttestAttack(_foreign_mesh_ca, "REPORT_DATA"),
    "debug-policy": AttestAttack(_debug_policy, "GUEST_POLICY"),
    "launch-tcb-below-minimum": AttestAttack(_tcb_below_minimum, "LAUNCH_TCB"),
    "other-host-data": AttestAttack(_other_host_data, "HOST_DATA"),
    "ask-revoked-by-crl": AttestAttack(_revoked_ask, "REVOCATION"),
    "document-truncated": AttestAttack(_truncated_doc, "RESPONSE"),
}


@dataclass
class Attacked:
    relay: FaultRelay
    backend: LocalBackend
    embeddings_before: int


@pytest.fixture()
def attacked(relay: FaultRelay, backend: LocalBackend) -> Iterator[Attacked]:
    yield Attacked(relay, backend, backend.request_log.count(EMBEDDINGS))


def _assert_refused(
    target: Attacked, *, code: str, check: str | tuple[str, ...], manifest: bytes | None = None
) -> dict[str, Any]:
    """Start a proxy through the attacked relay; it must refuse, and nothing may be embedded."""
    proxy = start_proxy(target.backend, api_url=target.relay.url, manifest=manifest)
    try:
        health = wait_upstream(proxy.url)
        assert health["upstream"] == "failed", health
        resp = embed(proxy.url, TEXTS[:3])
        assert resp.status_code == 503, resp.text
        error = error_of(resp)
        assert error["code"] == code, error
        checks = (check,) if isinstance(check, str) else check
        assert any(c in error["message"] for c in checks), error["message"]
        status = httpx.get(proxy.url + "/", params={"format": "json"}).json()
        assert status["ready"] is False and status["secret"] is None
    finally:
        proxy.stop()
    assert target.relay.to(EMBEDDINGS) == []
    assert target.backend.request_log.count(EMBEDDINGS) == target.embeddings_before
    return error


@pytest.mark.parametrize("case", list(ATTEST_ATTACKS), ids=list(ATTEST_ATTACKS))
def test_forged_evidence_is_refused(attacked: Attacked, forger: Forger, case: str) -> None:
    attack = ATTEST_ATTACKS[case]
    attacked.relay.on(ATTEST, attest_rewrite(forger, attack.change, case), times=None)
    _assert_refused(attacked, code="attestation_failed", check=attack.check)
    # Refusal is final: no secret was asked for with unverified evidence.
    assert attacked.relay.to(SECRET) == []


def test_replayed_attestation_answer_is_refused(attacked: Attacked, forger: Forger) -> None:
    """A genuine answer recorded from an earlier proxy's attestation, replayed to a new one."""
    recorded = attacked.relay
    first = start_proxy(attacked.backend, api_url=recorded.url)
    try:
        assert wait_upstream(first.url)["upstream"] == "ready"
    finally:
        first.stop()
    earlier = recorded.to(ATTEST)[0]
    assert earlier.response is not None
    replayed = earlier.response
    recorded.clear()

    def apply(_exchange: Exchange, _answer: Response) -> Response:
        return replayed

    recorded.on(ATTEST, rewrite(apply, "replay_attest"), times=None)
    _assert_refused(attacked, code="attestation_failed", check="REPORT_DATA")


def test_pinned_manifest_one_byte_different_is_refused(attacked: Attacked) -> None:
    """The backend is honest; the user pinned a manifest that differs from its by one byte."""
    pinned = _manifest_one_byte(Path(attacked.backend.manifest_path).read_bytes())
    _assert_refused(attacked, code="attestation_failed", check="EXPECTED_MANIFEST", manifest=pinned)
    assert attacked.relay.to(SECRET) == []


# -- the secret exchange -----------------------------------------------------------------------

SecretChange = Callable[[Forger, bytes, bytes], bytes]
"""(forger, the proxy's secret request body, the backend's genuine answer) -> forged answer."""


def _fields(body: bytes) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in orjson.loads(body).items()}


def _encode(fields: dict[str, bytes]) -> bytes:
    return orjson.dumps({k: base64.b64encode(v).decode() for k, v in fields.items()})


def _attacker_mesh(f: Forger, request: bytes, genuine: bytes) -> bytes:
    """A complete man in the middle: its own CA, mesh certificate and HPKE answer."""
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = Forger.ca(ca_key, "system:coordinator:intermediate")
    key = ec.generate_private_key(ec.SECP256R1())
    body, _secret = serve_secret_exchange(
        request, key, Forger.mesh_cert(key.public_key(), ca, ca_key)
    )
    return body


def _impostor_same_name(f: Forger, request: bytes, genuine: bytes) -> bytes:
    """A mesh certificate whose issuer *name* is the attested mesh CA's, signed by another key."""
    key = ec.generate_private_key(ec.SECP256R1())
    impostor_key = ec.generate_private_key(ec.SECP384R1())
    cert = Forger.mesh_cert(key.public_key(), f.mesh_ca, impostor_key)
    body, _secret = serve_secret_exchange(request, key, cert)
    return body


def _flipped_signature(f: Forger, request: bytes, genuine: bytes) -> bytes:
    fields = _fields(genuine)
    signature = bytearray(fields["Signature"])
    signature[-1] ^= 0x01
    fields["Signature"] = bytes(signature)
    return _encode(fields)


def _signature_for_another_exchange(f: Forger, request: bytes, genuine: bytes) -> bytes:
    """A real signature by the real mesh key, over another public key's exchange."""
    fields = _fields(genuine)
    other_public_key = bytes(len(base64.b64decode(orjson.loads(request)["PublicKey"])))
    fields["Signature"] = sign_exchange(f.mesh_key, other_public_key, fields["EncapsulatedKey"])
    return _encode(fields)


def _encapsulated_key_swapped(f: Forger, request: bytes, genuine: bytes) -> bytes:
    """The attacker's own encapsulation to the proxy's key, under the backend's signature."""
    ours = _fields(serve_secret_exchange(request, f.mesh_key, f.identity.mesh_cert_der)[0])
    fields = _fields(genuine)
    fields["EncapsulatedKey"] = ours["EncapsulatedKey"]
    return _encode(fields)


def _answer_for_another_public_key(f: Forger, request: bytes, genuine: bytes) -> bytes:
    """A genuine answer of the backend, but to another client's exchange (a replay)."""
    from privatemode_proxy.protocol import ClientSecretExchange

    other = ClientSecretExchange().request_body()
    return serve_secret_exchange(other, f.mesh_key, f.identity.mesh_cert_der)[0]


def _expired_mesh_cert(f: Forger, request: bytes, genuine: bytes) -> bytes:
    """Issued by the real mesh CA to the real mesh key, but expired."""
    now = datetime.now(UTC)
    cert = Forger.mesh_cert(
        f.mesh_key.public_key(),
        f.mesh_ca,
        f.mesh_ca_key,
        not_before=now - timedelta(days=60),
        not_after=now - timedelta(days=1),
    )
    fields = _fields(genuine)
    fields["MeshCert"] = cert
    return _encode(fields)


def _non_ecdsa_signature(f: Forger, request: bytes, genuine: bytes) -> bytes:
    fields = _fields(genuine)
    fields["Signature"] = b"\x00" * 64  # raw r||s instead of ASN.1
    return _encode(fields)


SECRET_ATTACKS: dict[str, tuple[SecretChange, str]] = {
    "mesh-cert-from-another-ca": (_attacker_mesh, "mesh"),
    "mesh-cert-impostor-with-the-ca-name": (_impostor_same_name, "mesh"),
    "signature-flipped": (_flipped_signature, "ignature"),
    "signature-of-another-exchange": (_signature_for_another_exchange, "ignature"),
    "signature-not-asn1": (_non_ecdsa_signature, "ignature"),
    "encapsulated-key-swapped": (_encapsulated_key_swapped, "ignature"),
    "answer-for-another-public-key": (_answer_for_another_public_key, "ignature"),
    "mesh-cert-expired": (_expired_mesh_cert, "not valid at"),
}


@pytest.mark.parametrize("case", list(SECRET_ATTACKS), ids=list(SECRET_ATTACKS))
def test_forged_secret_exchange_is_refused(attacked: Attacked, forger: Forger, case: str) -> None:
    change, word = SECRET_ATTACKS[case]

    def apply(exchange: Exchange, answer: Response) -> Response:
        assert answer.status == 200
        return Response(200, change(forger, exchange.body, answer.body), answer.headers)

    attacked.relay.on(SECRET, rewrite(apply, case), times=None)
    error = _assert_refused(attacked, code="secret_exchange_failed", check="after 3 attempts")
    assert word in error["message"], error["message"]
    # Retried as the protocol says: 3 attempts, each attesting again after the failed exchange.
    assert len(attacked.relay.to(SECRET)) >= 6
    assert len(attacked.relay.to(ATTEST)) >= 4
