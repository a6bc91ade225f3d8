"""Forging evidence and exchange answers for the attack tests, from the issuer's building blocks.

`Forger` holds the private keys of the local identity (read from its workspace, as the backend
keeps them) so a test can make evidence that is wrong in exactly one way and otherwise valid:
re-signed by the real VCEK, report data recomputed for the manifests it carries, certificates
issued by the real ASK. It also makes certificates of an attacker who has none of those keys.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from privatemode_proxy.attestation import (
    AttestationResponse,
    SnpAttestation,
    SnpReport,
    report_data,
    transition_digest,
)
from privatemode_proxy.attestation._amd import (
    AMD_PSS_PADDING,
)
from privatemode_proxy.attestation._snp import (
    SIGNED_REPORT_SIZE,
    CertificateChain,
    encode_report_signature,
)
from privatemode_proxy.local._issuer import IDENTITY_DIRNAME, make_vcek_certificate


def _load_key(path: Any) -> Any:
    return serialization.load_pem_private_key(
        path.read_bytes(), password=None, unsafe_skip_rsa_key_validation=True
    )


def sign_report(report: SnpReport, key: ec.EllipticCurvePrivateKey) -> SnpReport:
    """`report` signed with `key` (ECDSA P-384 over ABI bytes 0x000..0x29F), as firmware does."""
    unsigned = replace(report, signature=bytes(512))
    raw = unsigned.to_abi_bytes()[:SIGNED_REPORT_SIZE]
    r, s = decode_dss_signature(key.sign(raw, ec.ECDSA(hashes.SHA384())))
    return replace(report, signature=encode_report_signature(r, s))


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class Forger:
    """The local identity's keys, and evidence changed in one respect at a time."""

    def __init__(self, identity: Any) -> None:
        self.identity = identity
        directory = identity.workspace / IDENTITY_DIRNAME
        self.ark_key: rsa.RSAPrivateKey = _load_key(directory / "ark.key.pem")
        self.ask_key: rsa.RSAPrivateKey = _load_key(directory / "ask.key.pem")
        self.vcek_key: ec.EllipticCurvePrivateKey = _load_key(directory / "vcek.key.pem")
        self.mesh_ca_key: ec.EllipticCurvePrivateKey = _load_key(directory / "mesh_ca.key.pem")
        self.mesh_key: ec.EllipticCurvePrivateKey = _load_key(directory / "mesh.key.pem")
        self.ark = x509.load_pem_x509_certificate((directory / "ark.pem").read_bytes())
        self.ask = x509.load_pem_x509_certificate((directory / "ask.pem").read_bytes())
        self.mesh_ca = identity.mesh_ca

    # -- evidence ------------------------------------------------------------------------------

    @staticmethod
    def parts(document: bytes) -> tuple[AttestationResponse, SnpAttestation, SnpReport]:
        response = AttestationResponse.from_json(document)
        attestation = SnpAttestation.from_proto(response.raw_attestation_doc)
        assert attestation.report is not None
        return response, attestation, attestation.report

    def forge(
        self,
        document: bytes,
        nonce: bytes,
        *,
        manifests: tuple[bytes, ...] | None = None,
        vcek_key: ec.EllipticCurvePrivateKey | None = None,
        chain: CertificateChain | None = None,
        resign: bool = True,
        rebind: bool = True,
        **report_changes: Any,
    ) -> bytes:
        """`document` (the backend's answer for `nonce`) with report fields changed.

        `rebind` recomputes the report data for the manifests carried (so a changed manifest is
        the only thing wrong); `resign` signs the report again with the VCEK key (or `vcek_key`).
        """
        response, attestation, report = self.parts(document)
        history = manifests if manifests is not None else response.manifests
        if rebind and "report_data" not in report_changes:
            report_changes["report_data"] = report_data(
                nonce, transition_digest(history), response.root_ca, response.mesh_ca
            )
        report = replace(report, **report_changes)
        if resign:
            report = sign_report(report, vcek_key or self.vcek_key)
        attestation = replace(
            attestation,
            report=report,
            certificate_chain=chain if chain is not None else attestation.certificate_chain,
        )
        return replace(
            response, manifests=tuple(history), raw_attestation_doc=attestation.to_proto()
        ).to_json()

    def chain_with_vcek(self, document: bytes, vcek: x509.Certificate) -> CertificateChain:
        _, attestation, _ = self.parts(document)
        assert attestation.certificate_chain is not None
        return replace(
            attestation.certificate_chain,
            vcek_cert=vcek.public_bytes(serialization.Encoding.DER),
        )

    def vcek(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        chip_id: bytes | None = None,
        now: datetime | None = None,
        lifetime: timedelta = timedelta(days=365),
        ask_key: rsa.RSAPrivateKey | None = None,
        ask: x509.Certificate | None = None,
    ) -> x509.Certificate:
        """A VCEK in AMD's form issued by the real ASK (or another), valid from `now - 1 day`."""
        return make_vcek_certificate(
            ask_key or self.ask_key,
            ask or self.ask,
            public_key,
            chip_id=chip_id if chip_id is not None else self.identity.chip_id,
            tcb=self.identity.tcb,
            now=now or datetime.now(UTC),
            lifetime=lifetime,
        )

    # -- certificates of the mesh ---------------------------------------------------------------

    @staticmethod
    def ca(key: ec.EllipticCurvePrivateKey, common_name: str) -> x509.Certificate:
        now = datetime.now(UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA384())
        )

    @staticmethod
    def mesh_cert(
        public_key: ec.EllipticCurvePublicKey,
        issuer: x509.Certificate,
        issuer_key: ec.EllipticCurvePrivateKey,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> bytes:
        """A mesh certificate (DER) like the backend's, issued by `issuer`."""
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name("coordinator"))
            .issuer_name(issuer.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(days=1))
            .not_valid_after(not_after or now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(issuer_key, hashes.SHA384())
        )
        return cert.public_bytes(serialization.Encoding.DER)

    def revoking_crl(self, serial: int) -> bytes:
        """A CRL signed by the real ARK that revokes `serial` (the ASK's)."""
        now = datetime.now(UTC)
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - timedelta(days=1))
            .build()
        )
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ark.subject)
            .last_update(now - timedelta(hours=1))
            .next_update(now + timedelta(days=7))
            .add_revoked_certificate(revoked)
            .sign(self.ark_key, hashes.SHA384(), rsa_padding=AMD_PSS_PADDING)
        )
        return crl.public_bytes(serialization.Encoding.DER)
