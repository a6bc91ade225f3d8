"""The local backend's identity: its AMD-like chain, manifest and SEV-SNP-format evidence."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from attestation_support import NONCE
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from privatemode_proxy.attestation import (
    AttestationResponse,
    Manifest,
    SnpAttestation,
    amd_roots,
    decode_attest_response,
    load_trusted_root,
    report_data,
    transition_digest,
    verify_attestation,
    verify_snp_report,
)
from privatemode_proxy.attestation._amd import (
    amd_name_problems,
    amd_signature_problem,
    kds_extensions,
    verify_amd_signature,
)
from privatemode_proxy.attestation._contrast import (
    CONTRAST_FAMILY_ID,
    CONTRAST_IMAGE_ID,
    id_key_digest,
)
from privatemode_proxy.attestation._snp import (
    CRL_EXTRA_KEY,
    GENOA_CPUID1EAX,
    GuestPolicy,
    PlatformInfo,
    SevProduct,
)
from privatemode_proxy.attestation._x509 import (
    load_certificate,
    load_crl,
)
from privatemode_proxy.local._issuer import (
    IDENTITY_DIRNAME,
    LOCAL_TCB,
    LocalIdentity,
    compute_measurement,
)


@pytest.fixture
def copied_workspace(identity: LocalIdentity, tmp_path: Path) -> Path:
    """A private copy of the session identity's workspace (loading it is fast)."""
    shutil.copytree(identity.workspace / IDENTITY_DIRNAME, tmp_path / IDENTITY_DIRNAME)
    return tmp_path


def test_root_pem_is_an_amd_style_genoa_chain(identity: LocalIdentity) -> None:
    (root,) = load_trusted_root(identity.root_pem_path)
    assert root.product_line == "Genoa"
    assert root.to_pem() == identity.root_pem_path.read_bytes()
    assert amd_name_problems(root.ark.subject, "ARK-Genoa") == []
    assert amd_name_problems(root.ask.subject, "SEV-Genoa") == []
    for cert in (root.ark, root.ask):
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        assert key.key_size == 4096
        assert amd_signature_problem(cert) is None  # RSASSA-PSS, SHA-384
        verify_amd_signature(cert, root.ark.public_key())  # with MGF1-SHA-384, salt 48
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert len(points) == 1
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.ark.issuer == root.ark.subject
    # Not AMD's: a real AMD root does not sign it.
    assert all(r.ark != root.ark for r in amd_roots())


def test_vcek_is_amd_like(identity: LocalIdentity) -> None:
    vcek = x509.load_der_x509_certificate(identity.vcek_der)
    assert vcek.serial_number == 1  # cryptography refuses AMD's 0
    assert amd_name_problems(vcek.subject, "SEV-VCEK") == []
    assert amd_name_problems(vcek.issuer, "SEV-Genoa") == []
    key = vcek.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP384R1)
    extensions = kds_extensions(vcek)
    assert extensions.product_name == "Genoa"
    assert extensions.hwid == identity.chip_id
    assert extensions.tcb == LOCAL_TCB == identity.tcb
    verify_amd_signature(
        load_certificate(identity.vcek_der), identity.trusted_root().ask.public_key()
    )


def test_manifest_matches_the_evidence(identity: LocalIdentity) -> None:
    data = identity.manifest_path.read_bytes()
    assert data == identity.manifest_bytes
    manifest = Manifest.from_json(data)
    manifest.validate()
    (rv,) = manifest.snp
    assert rv.product_name == "Genoa"
    assert rv.trusted_measurement == identity.measurement.hex()
    assert rv.minimum_tcb.parts() == identity.tcb
    assert rv.guest_policy == GuestPolicy(smt=True, page_swap_disable=True)
    assert rv.platform_info == PlatformInfo(ecc_enabled=True, alias_check_complete=True)
    assert rv.minimum_mitigation_vector == 15
    assert rv.allowed_chip_ids == (identity.chip_id.hex().upper(),)
    assert manifest.coordinator_policy_hashes() == [hashlib.sha256(identity.policy).digest()]


def test_report_fields(identity: LocalIdentity) -> None:
    response = AttestationResponse.from_json(identity.attestation_doc(NONCE))
    evidence = SnpAttestation.from_proto(response.raw_attestation_doc)
    report = evidence.report
    assert report is not None
    assert report.version == 5
    assert report.cpuid1eax_fms == GENOA_CPUID1EAX
    assert report.product_line() == "Genoa"
    assert report.policy == 0x2030000
    assert (report.family_id, report.image_id) == (CONTRAST_FAMILY_ID, CONTRAST_IMAGE_ID)
    assert report.platform_info == 0x24
    assert (report.launch_mit_vector, report.current_mit_vector) == (15, 15)
    assert report.signer_info == 0
    assert report.vmpl == 0
    assert report.measurement == identity.measurement
    assert report.host_data == hashlib.sha256(identity.policy).digest()
    assert report.id_key_digest == id_key_digest(identity.measurement, 0x2030000)
    assert report.chip_id == identity.chip_id
    assert report.reported_tcb == report.current_tcb == report.launch_tcb == LOCAL_TCB.to_int()
    assert report.report_data == report_data(
        NONCE, transition_digest([identity.manifest_bytes]), response.root_ca, response.mesh_ca
    )
    assert response.policies == (identity.policy,)
    assert response.attestation_type == (1, 3, 9901, 2, 1)
    assert evidence.product == SevProduct(name=2, machine_stepping=0)
    chain = evidence.certificate_chain
    assert chain is not None
    assert chain.vcek_cert == identity.vcek_der
    assert chain.ask_cert == identity.trusted_root().ask_der
    assert chain.ark_cert == identity.trusted_root().ark_der
    assert chain.extras[CRL_EXTRA_KEY] == identity.crl_der()
    # The signature: ECDSA P-384 / SHA-384 over bytes 0x000..0x29F, r and s little-endian.
    r, s = report.signature_rs()
    key = x509.load_der_x509_certificate(identity.vcek_der).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(encode_dss_signature(r, s), report.to_abi_bytes()[:0x2A0], ec.ECDSA(hashes.SHA384()))
    # And the core SNP checks pass with the local root trusted.
    core = verify_snp_report(
        report.to_abi_bytes(), identity.vcek_der, trusted_roots=[identity.trusted_root()]
    )
    assert core.product_line == "Genoa"


def test_crl_is_signed_by_the_ark_and_renewed(identity: LocalIdentity) -> None:
    crl_der = identity.crl_der()
    crl = load_crl(crl_der)
    verify_amd_signature(crl, identity.trusted_root().ark.public_key())
    assert crl.issuer == identity.trusted_root().ark.subject
    assert len(crl) == 0
    next_update = crl.next_update_utc
    assert next_update is not None
    assert next_update > datetime.now(UTC) + timedelta(days=1)
    renewed = identity.crl_der(now=next_update - timedelta(hours=1))
    assert renewed != crl_der
    renewed_next = load_crl(renewed).next_update_utc
    assert renewed_next is not None
    assert renewed_next > next_update


def test_mesh_certificate_chains_to_the_mesh_ca(identity: LocalIdentity) -> None:
    mesh = x509.load_der_x509_certificate(identity.mesh_cert_der)
    mesh.verify_directly_issued_by(identity.mesh_ca)
    assert mesh.public_key() == identity.mesh_key.public_key()
    assert identity.mesh_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not mesh.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    digest = hashlib.sha256(b"public key" + b"enc").digest()
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    signature = identity.mesh_key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    key = mesh.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_reload_reuses_the_stored_chain(identity: LocalIdentity, copied_workspace: Path) -> None:
    again = LocalIdentity.load_or_create(copied_workspace)
    assert again.trusted_root().to_pem() == identity.trusted_root().to_pem()
    assert again.chip_id == identity.chip_id
    assert again.mesh_cert_der == identity.mesh_cert_der
    assert again.measurement == identity.measurement
    assert again.manifest_bytes == identity.manifest_bytes
    assert again.root_pem_path.read_bytes() == identity.root_pem_path.read_bytes()
    for name in ("ark.key.pem", "ask.key.pem", "vcek.key.pem", "mesh.key.pem"):
        mode = stat.S_IMODE((copied_workspace / IDENTITY_DIRNAME / name).stat().st_mode)
        assert mode == 0o600, name


def test_measurement_covers_the_model_files(copied_workspace: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights v1")
    (model / "tokenizer.json").write_text("{}")
    first = LocalIdentity.load_or_create(copied_workspace, measurement_inputs=[model])
    assert first.measurement == compute_measurement([model])
    assert first.measurement != compute_measurement()
    assert (
        json.loads(first.manifest_path.read_bytes())["ReferenceValues"]["snp"][0][
            "TrustedMeasurement"
        ]
        == first.measurement.hex()
    )
    (model / "model.safetensors").write_bytes(b"weights v2")
    second = LocalIdentity.load_or_create(copied_workspace, measurement_inputs=[model])
    assert second.measurement != first.measurement
    assert second.manifest_path.read_bytes() == second.manifest_bytes != first.manifest_bytes
    # Evidence from the new identity verifies against the new manifest only.
    document = second.attestation_doc(NONCE)
    verify_attestation(
        NONCE,
        document,
        expected_manifest=second.manifest_bytes,
        trusted_roots=[second.trusted_root()],
    )
    with pytest.raises(FileNotFoundError):
        compute_measurement([tmp_path / "missing"])


def test_unusable_identity_is_replaced(
    copied_workspace: Path, caplog: pytest.LogCaptureFixture, identity: LocalIdentity
) -> None:
    (copied_workspace / IDENTITY_DIRNAME / "identity.json").write_text("{broken")
    with caplog.at_level(logging.WARNING):
        fresh = LocalIdentity.load_or_create(copied_workspace)
    assert any("replacing the local identity" in r.message for r in caplog.records)
    assert fresh.chip_id != identity.chip_id
    assert fresh.root_pem_path.read_bytes() == fresh.trusted_root().to_pem()
    verify_attestation(
        NONCE,
        fresh.attestation_doc(NONCE),
        expected_manifest=fresh.manifest_bytes,
        trusted_roots=[fresh.trusted_root()],
    )


def test_nonce_must_be_32_bytes(identity: LocalIdentity) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        identity.attestation_doc(b"short")


def test_privatemode_wrapper(identity: LocalIdentity) -> None:
    body = identity.privatemode_attest_response(NONCE)
    assert list(json.loads(body)) == ["AttestationDoc"]
    document = decode_attest_response(body)
    result = verify_attestation(
        NONCE,
        document,
        expected_manifest=identity.manifest_bytes,
        trusted_roots=[identity.trusted_root()],
    )
    assert result.mesh_ca == identity.mesh_ca


def test_concurrent_documents_all_verify(identity: LocalIdentity) -> None:
    nonces = [bytes([i]) * 32 for i in range(16)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        documents = list(pool.map(identity.attestation_doc, nonces))
    for nonce, document in zip(nonces, documents, strict=True):
        verify_attestation(
            nonce,
            document,
            expected_manifest=identity.manifest_bytes,
            trusted_roots=[identity.trusted_root()],
        )
