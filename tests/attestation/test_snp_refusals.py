"""Every VCEK / chain / revocation refusal of the SEV-SNP validator, made to happen.

Each test forges one defect into the local identity's otherwise valid evidence (test keys only)
and checks that the verifier refuses it, naming the check; plus the independent check of the
hand-written P-384 key recovery against the `ecdsa` package.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import ecdsa
import pytest
from attestation_support import NONCE, IdentityKeys, forge_response, rebuild_response
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from privatemode_proxy.attestation import (
    AttestationError,
    CertificateFetchError,
    CertificateUnavailableError,
    CollateralUnavailableError,
    SnpAttestation,
    StaticCertificateSource,
    TcbParts,
    verify_attestation,
)
from privatemode_proxy.attestation._amd import (
    AMD_PSS_PADDING,
    OID_CSP_ID,
    OID_HWID,
    amd_name,
)
from privatemode_proxy.attestation._contrast import (
    CONTRAST_ID_SIGNATURE,
    contrast_id_block,
    id_key_bytes,
    recover_id_public_key,
)
from privatemode_proxy.attestation._roots import TrustedRoot
from privatemode_proxy.attestation._snp import CRL_EXTRA_KEY
from privatemode_proxy.local._issuer import LocalIdentity, vcek_certificate_builder

GENOA = "snp[0] (Genoa)"


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def _ia5(text: str) -> bytes:
    return _tlv(0x16, text.encode("ascii"))


def _vcek(
    identity: LocalIdentity,
    keys: IdentityKeys,
    *,
    public_key: Any = None,
    hwid: bytes | None = None,
    csp_id: str | None = None,
    issuer: x509.Name | None = None,
    sign: tuple[Any, Any] | None = None,
) -> bytes:
    """A VCEK like the identity's (the issuer's own builder), with one thing changed; DER."""
    builder = vcek_certificate_builder(
        issuer or keys.ask.subject,
        public_key or keys.vcek_key.public_key(),
        tcb=identity.tcb,
        now=datetime.now(UTC),
        lifetime=timedelta(days=30),
    )
    if hwid is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(OID_HWID, hwid), critical=False)
    if csp_id is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(OID_CSP_ID, _ia5(csp_id)), critical=False
        )
    digest, rsa_padding = sign or (hashes.SHA384(), AMD_PSS_PADDING)
    cert = builder.sign(keys.ask_key, digest, rsa_padding=rsa_padding)
    return cert.public_bytes(serialization.Encoding.DER)


def _with_vcek(identity: LocalIdentity, keys: IdentityKeys, vcek_der: bytes) -> bytes:
    return forge_response(identity, keys, chain=lambda chain: replace(chain, vcek_cert=vcek_der))


def _refused(identity: LocalIdentity, document: bytes, **options: Any) -> AttestationError:
    options.setdefault("trusted_roots", [identity.trusted_root()])
    with pytest.raises(AttestationError) as info:
        verify_attestation(NONCE, document, expected_manifest=identity.manifest_bytes, **options)
    return info.value


def test_the_forging_helper_alone_passes(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    # Guard for the tests below: a VCEK rebuilt by `_vcek` with nothing changed verifies.
    vcek = _vcek(identity, identity_keys, hwid=identity.chip_id)
    result = verify_attestation(
        NONCE,
        _with_vcek(identity, identity_keys, vcek),
        expected_manifest=identity.manifest_bytes,
        trusted_roots=[identity.trusted_root()],
    )
    assert result.tee == "AMD SEV-SNP"


def test_vcek_not_version_3_is_refused(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    # Rebuild the TBS without its [0] version field (= v1) and re-sign it with the ASK key.
    vcek = x509.load_der_x509_certificate(_vcek(identity, identity_keys, hwid=identity.chip_id))
    tbs = vcek.tbs_certificate_bytes
    header = 2 + (tbs[1] & 0x7F if tbs[1] & 0x80 else 0)
    body = tbs[header:]
    assert body[:5] == bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2 (v3)
    tbs_v1 = _tlv(0x30, body[5:])
    signature = identity_keys.ask_key.sign(tbs_v1, AMD_PSS_PADDING, hashes.SHA384())
    der = vcek.public_bytes(serialization.Encoding.DER)
    algorithm = der[4 + len(tbs) :][: der[4 + len(tbs) + 1] + 2]
    v1 = _tlv(0x30, tbs_v1 + algorithm + _tlv(0x03, b"\x00" + signature))
    error = _refused(identity, _with_vcek(identity, identity_keys, v1))
    assert error.checks_for(GENOA) == {"ENDORSEMENT_KEY"}
    assert "v1" in str(error) or "cannot parse" in str(error)


def test_vcek_with_a_p256_key_is_refused(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    vcek = _vcek(identity, identity_keys, public_key=p256, hwid=identity.chip_id)
    error = _refused(identity, _with_vcek(identity, identity_keys, vcek))
    assert error.checks_for(GENOA) == {"ENDORSEMENT_KEY"}
    assert "public key is not ECDSA P-384" in str(error)


def test_vcek_without_hwid_is_refused(identity: LocalIdentity, identity_keys: IdentityKeys) -> None:
    vcek = _vcek(identity, identity_keys)
    error = _refused(identity, _with_vcek(identity, identity_keys, vcek))
    assert error.checks_for(GENOA) == {"KDS_EXTENSIONS"}
    assert "no 64-byte HWID" in str(error)


def test_vcek_with_a_csp_id_is_refused(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    # A VLEK-style certificate (CSP_ID, no HWID) presented as a VCEK.
    vcek = _vcek(identity, identity_keys, csp_id="some-cloud")
    error = _refused(identity, _with_vcek(identity, identity_keys, vcek))
    assert error.checks_for(GENOA) == {"KDS_EXTENSIONS"}


def test_vcek_with_a_foreign_issuer_name_is_refused(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    vcek = _vcek(identity, identity_keys, hwid=identity.chip_id, issuer=amd_name("SEV-Milan"))
    error = _refused(identity, _with_vcek(identity, identity_keys, vcek))
    assert error.checks_for(GENOA) == {"CHAIN"}
    assert "VCEK issuer" in str(error) and "SEV-Genoa" in str(error)


@pytest.mark.parametrize(
    ("sign", "check", "message"),
    [
        ((hashes.SHA384(), padding.PKCS1v15()), "ENDORSEMENT_KEY", "not RSASSA-PSS SHA-384"),
        (
            (hashes.SHA256(), padding.PSS(padding.MGF1(hashes.SHA256()), 32)),
            "ENDORSEMENT_KEY",
            "not RSASSA-PSS SHA-384",
        ),
        # RSASSA-PSS SHA-384 with salt 20 or an MGF1-SHA-256 mask: not AMD's parameters.
        (
            (hashes.SHA384(), padding.PSS(padding.MGF1(hashes.SHA384()), 20)),
            "ENDORSEMENT_KEY",
            "not RSASSA-PSS SHA-384",
        ),
        (
            (hashes.SHA384(), padding.PSS(padding.MGF1(hashes.SHA256()), 48)),
            "ENDORSEMENT_KEY",
            "not RSASSA-PSS SHA-384",
        ),
    ],
)
def test_amd_signature_algorithm_policy(
    identity: LocalIdentity, identity_keys: IdentityKeys, sign: Any, check: str, message: str
) -> None:
    vcek = _vcek(identity, identity_keys, hwid=identity.chip_id, sign=sign)
    error = _refused(identity, _with_vcek(identity, identity_keys, vcek))
    assert error.checks_for(GENOA) == {check}
    assert message in str(error)


def test_ask_that_is_not_a_ca_is_refused(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    # `parse_trusted_root` refuses such a root; the verifier checks again for roots built
    # directly (defence in depth).
    ask = identity_keys.ask
    now = datetime.now(UTC)
    not_ca = (
        x509.CertificateBuilder()
        .subject_name(ask.subject)
        .issuer_name(identity_keys.ark.subject)
        .public_key(identity_keys.ask_key.public_key())
        .serial_number(ask.serial_number)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(identity_keys.ark_key, hashes.SHA384(), rsa_padding=AMD_PSS_PADDING)
    )
    root = TrustedRoot(product_line="Genoa", ask=not_ca, ark=identity_keys.ark, source="test")
    error = _refused(identity, identity.attestation_doc(NONCE), trusted_roots=[root])
    assert error.checks_for(GENOA) == {"CHAIN"}
    assert "the ASK is not a CA" in str(error)


class _FailingCrlSource(StaticCertificateSource):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def crl(self, product_line: str) -> bytes:
        raise self.error


def _without_crl(identity: LocalIdentity) -> bytes:
    def strip(attestation: SnpAttestation) -> SnpAttestation:
        assert attestation.certificate_chain is not None
        extras = {
            k: v for k, v in attestation.certificate_chain.extras.items() if k != CRL_EXTRA_KEY
        }
        return replace(
            attestation, certificate_chain=replace(attestation.certificate_chain, extras=extras)
        )

    return rebuild_response(identity.attestation_doc(NONCE), evidence=strip)


def test_crl_fetch_failure_is_refused_as_transient(identity: LocalIdentity) -> None:
    source = _FailingCrlSource(CertificateFetchError("could not fetch CRL: HTTP 503"))
    error = _refused(identity, _without_crl(identity), certificates=source)
    assert isinstance(error, CollateralUnavailableError)
    assert error.checks_for(GENOA) == {"REVOCATION"}
    assert all(f.transient for f in error.failures)
    assert "HTTP 503" in str(error)


def test_crl_unavailable_for_good_is_a_final_refusal(identity: LocalIdentity) -> None:
    source = _FailingCrlSource(CertificateUnavailableError("could not fetch CRL: HTTP 404"))
    error = _refused(identity, _without_crl(identity), certificates=source)
    assert not isinstance(error, CollateralUnavailableError)
    assert error.checks_for(GENOA) == {"REVOCATION"}
    assert not any(f.transient for f in error.failures)


def test_vcek_fetch_failure_is_transient(identity: LocalIdentity) -> None:
    class FailingVcek(StaticCertificateSource):
        def vcek(self, product_line: str, chip_id: bytes, reported_tcb: TcbParts) -> bytes:
            raise CertificateFetchError("could not fetch VCEK: ConnectError")

    def drop(attestation: SnpAttestation) -> SnpAttestation:
        assert attestation.certificate_chain is not None
        return replace(
            attestation, certificate_chain=replace(attestation.certificate_chain, vcek_cert=b"")
        )

    document = rebuild_response(identity.attestation_doc(NONCE), evidence=drop)
    error = _refused(identity, document, certificates=FailingVcek())
    assert isinstance(error, CollateralUnavailableError)
    assert error.checks_for(GENOA) == {"CERTIFICATES"}


@pytest.mark.parametrize("seed", range(4))
def test_id_key_recovery_matches_the_ecdsa_package(seed: int) -> None:
    measurement = hashlib.sha384(bytes([seed])).digest()
    block = contrast_id_block(measurement, 0x30000 | seed)
    ours = recover_id_public_key(block)
    r, s = CONTRAST_ID_SIGNATURE
    signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    candidates = ecdsa.VerifyingKey.from_public_key_recovery(
        signature, block, ecdsa.NIST384p, hashfunc=hashlib.sha384
    )
    theirs = sorted((int(k.pubkey.point.x()), int(k.pubkey.point.y())) for k in candidates)
    assert ours == theirs[0]  # Contrast takes the smaller candidate by (X, Y)
    assert len(id_key_bytes(ours)) == 0x404
