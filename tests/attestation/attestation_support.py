"""Helpers shared by the attestation tests (constants, forging evidence from test keys)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from privatemode_proxy.attestation import AttestationResponse, SnpAttestation, SnpReport
from privatemode_proxy.attestation._snp import (
    encode_report_signature,
)

#: Oak's (and expected.json's) fixed time for the Oak vectors and the synthetic case.
T_2025 = datetime(2025, 10, 1, 8, 0, 0, tzinfo=UTC)
NONCE = bytes(range(32))


class IdentityKeys:
    """The private keys of the session's local identity, for tests that forge evidence."""

    def __init__(self, directory: Path) -> None:
        def load(name: str) -> Any:
            return serialization.load_pem_private_key(
                (directory / name).read_bytes(), password=None, unsafe_skip_rsa_key_validation=True
            )

        self.ark_key: rsa.RSAPrivateKey = load("ark.key.pem")
        self.ask_key: rsa.RSAPrivateKey = load("ask.key.pem")
        self.vcek_key: ec.EllipticCurvePrivateKey = load("vcek.key.pem")
        self.ark = x509.load_pem_x509_certificate((directory / "ark.pem").read_bytes())
        self.ask = x509.load_pem_x509_certificate((directory / "ask.pem").read_bytes())
        self.vcek = x509.load_pem_x509_certificate((directory / "vcek.pem").read_bytes())


def sign_report(report: SnpReport, key: ec.EllipticCurvePrivateKey) -> SnpReport:
    """`report` re-signed with `key` (ECDSA P-384 over the ABI bytes 0x000..0x29F)."""
    raw = replace(report, signature=bytes(512)).to_abi_bytes()[:0x2A0]
    r, s = decode_dss_signature(key.sign(raw, ec.ECDSA(hashes.SHA384())))
    return replace(report, signature=encode_report_signature(r, s))


def rebuild_response(
    document: bytes,
    *,
    evidence: Callable[[SnpAttestation], SnpAttestation] | None = None,
    **changes: Any,
) -> bytes:
    """A Contrast response with its evidence and/or top-level fields changed."""
    response = AttestationResponse.from_json(document)
    if evidence is not None:
        attestation = SnpAttestation.from_proto(response.raw_attestation_doc)
        changes["raw_attestation_doc"] = evidence(attestation).to_proto()
    return replace(response, **changes).to_json()


def forge_response(
    identity: Any,
    keys: IdentityKeys,
    *,
    nonce: bytes = NONCE,
    manifests: tuple[bytes, ...] | None = None,
    vcek_key: ec.EllipticCurvePrivateKey | None = None,
    chain: Callable[[Any], Any] | None = None,
    **report_changes: Any,
) -> bytes:
    """The local identity's response with report fields changed and the report re-signed.

    The report data is recomputed for `manifests` (default: the identity's one manifest) unless
    `report_data` is among the changes, so only the intended change is "wrong".
    """
    from privatemode_proxy.attestation import report_data, transition_digest

    document = identity.attestation_doc(nonce)
    response = AttestationResponse.from_json(document)
    history = manifests if manifests is not None else response.manifests
    report_changes.setdefault(
        "report_data",
        report_data(nonce, transition_digest(history), response.root_ca, response.mesh_ca),
    )

    def change(attestation: SnpAttestation) -> SnpAttestation:
        assert attestation.report is not None
        report = replace(attestation.report, **report_changes)
        report = sign_report(report, vcek_key or keys.vcek_key)
        certificate_chain = attestation.certificate_chain
        if chain is not None:
            certificate_chain = chain(certificate_chain)
        return replace(attestation, report=report, certificate_chain=certificate_chain)

    return rebuild_response(document, evidence=change, manifests=tuple(history))
