"""`verify_attestation`: the synthetic Contrast response, and the local identity end to end.

Negative cases forge evidence with the local identity's test keys (ARK, ASK, VCEK), so that
each test changes exactly one thing and the signature over the report stays valid unless the
test is about the signature.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from attestation_support import (
    NONCE,
    T_2025,
    IdentityKeys,
    forge_response,
    rebuild_response,
    sign_report,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from privatemode_proxy.attestation import (
    AttestationError,
    AttestationResponse,
    Manifest,
    SnpAttestation,
    StaticCertificateSource,
    TcbParts,
    amd_roots,
    decode_attest_response,
    report_data,
    transition_digest,
    verify_attestation,
)
from privatemode_proxy.attestation._amd import (
    AMD_PSS_PADDING,
)
from privatemode_proxy.attestation._contrast import (
    id_key_digest,
)
from privatemode_proxy.attestation._manifest import (
    MinimumTcb,
    TdxReferenceValues,
)
from privatemode_proxy.attestation._snp import (
    CRL_EXTRA_KEY,
    GuestPolicy,
    PlatformInfo,
)
from privatemode_proxy.attestation._x509 import (
    pem_encode,
)
from privatemode_proxy.local._issuer import LocalIdentity, make_vcek_certificate

GENOA = "snp[0] (Genoa)"


def _milan_root() -> list[Any]:
    return [root for root in amd_roots() if root.product_line == "Milan"]


# ---------------------------------------------------------------------------------------------
# The synthetic Contrast response (a real Genoa report in a constructed response)
# ---------------------------------------------------------------------------------------------


def test_synthetic_response_fails_on_exactly_the_expected_checks(synthetic: dict[str, Any]) -> None:
    expected = synthetic["expected"]
    with pytest.raises(AttestationError) as info:
        verify_attestation(
            bytes.fromhex(expected["nonce_hex"]),
            decode_attest_response(synthetic["wrapped"]),
            expected_manifest=synthetic["manifest"],
            trusted_roots=amd_roots(),
            now=T_2025,
        )
    error = info.value
    # synthetic_expected.json names REPORT_DATA and ID_KEY_DIGEST; offline, without a CRL
    # (none attached, no certificate source) revocation also fails closed, as in the Go SDK.
    assert error.checks_for(GENOA) == {"REPORT_DATA", "ID_KEY_DIGEST", "REVOCATION"}
    assert error.checks == error.checks_for(GENOA)
    messages = {f.check: f.message for f in error.failures}
    assert expected["actual_report_data_in_report"] in messages["REPORT_DATA"]
    assert expected["expected_report_data"] in messages["REPORT_DATA"]
    id_key = next(v for k, v in expected.items() if k.startswith("expected_id_key_digest"))
    assert id_key in messages["ID_KEY_DIGEST"]
    assert messages["ID_KEY_DIGEST"].startswith("ID_KEY_DIGEST " + "00" * 48)
    assert "no CRL" in messages["REVOCATION"]
    assert "https://kdsintf.amd.com/vcek/v1/Genoa/crl" in messages["REVOCATION"]
    assert str(error).startswith("attestation failed: no reference value of the manifest matched")


def test_synthetic_response_rejects_a_crl_not_signed_by_amd(
    synthetic: dict[str, Any], identity: LocalIdentity
) -> None:
    # A certificate source offering a CRL signed by a test key: not AMD's ARK, so not used.
    source = StaticCertificateSource(crls={"Genoa": identity.crl_der()})
    with pytest.raises(AttestationError) as info:
        verify_attestation(
            NONCE,
            synthetic["response"],
            expected_manifest=synthetic["manifest"],
            trusted_roots=amd_roots(),
            now=T_2025,
            certificates=source,
        )
    assert info.value.checks == {"REPORT_DATA", "ID_KEY_DIGEST", "REVOCATION"}
    revocation = next(f for f in info.value.failures if f.check == "REVOCATION")
    assert "not signed by the trusted ARK-Genoa" in revocation.message


@pytest.mark.parametrize(
    ("roots", "now", "check", "message"),
    [
        ("milan", T_2025, "CHAIN", "no trusted root for product line Genoa"),
        ("amd", datetime(2033, 1, 1, tzinfo=UTC), "VALIDITY", "VCEK valid 2025-08-07T17:21:41Z"),
        ("amd", datetime(2025, 8, 1, tzinfo=UTC), "VALIDITY", "VCEK valid"),
    ],
)
def test_synthetic_response_chain_and_time(
    synthetic: dict[str, Any], roots: str, now: datetime, check: str, message: str
) -> None:
    trusted = _milan_root() if roots == "milan" else amd_roots()
    with pytest.raises(AttestationError) as info:
        verify_attestation(
            NONCE,
            synthetic["response"],
            expected_manifest=synthetic["manifest"],
            trusted_roots=trusted,
            now=now,
        )
    assert info.value.checks == {check}
    assert message in str(info.value)


def test_synthetic_response_with_a_milan_reference_value(synthetic: dict[str, Any]) -> None:
    manifest = synthetic["manifest"].replace(b'"ProductName":"Genoa"', b'"ProductName":"Milan"')
    response = rebuild_response(synthetic["response"], manifests=(manifest,))
    with pytest.raises(AttestationError) as info:
        verify_attestation(
            NONCE, response, expected_manifest=manifest, trusted_roots=amd_roots(), now=T_2025
        )
    assert info.value.checks_for("snp[0] (Milan)") == {"PRODUCT"}
    assert "report is from product line Genoa (CPUID family 19h model 11h)" in str(info.value)


# ---------------------------------------------------------------------------------------------
# The local identity: the positive end-to-end case
# ---------------------------------------------------------------------------------------------


def test_local_evidence_verifies_with_its_root_trusted(identity: LocalIdentity) -> None:
    document = identity.attestation_doc(NONCE)
    result = verify_attestation(
        NONCE,
        document,
        expected_manifest=identity.manifest_path.read_bytes(),
        trusted_roots=[*amd_roots(), identity.trusted_root()],
    )
    assert result.mesh_ca == identity.mesh_ca
    assert result.mesh_ca_pem == identity.mesh_ca_pem
    assert result.product == "Genoa"
    assert result.measurement == identity.measurement.hex()
    assert result.reported_tcb == identity.tcb.as_dict()
    assert result.reference_value == GENOA
    assert result.chip_id == identity.chip_id.hex()
    assert result.trusted_root == str(identity.root_pem_path)
    summary = result.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["manifest_sha256"] == result.manifest_sha256
    # The wrapped form (what /privatemode/v1/attest answers) carries the same document.
    assert decode_attest_response(identity.privatemode_attest_response(NONCE)).startswith(b"{")


def test_local_evidence_fails_when_only_amd_roots_are_trusted(identity: LocalIdentity) -> None:
    with pytest.raises(AttestationError) as info:
        verify_attestation(
            NONCE,
            identity.attestation_doc(NONCE),
            expected_manifest=identity.manifest_bytes,
            trusted_roots=amd_roots(),
        )
    assert info.value.checks == {"CHAIN"}
    assert "AMD Genoa (embedded): VCEK by ASK: RSA-PSS signature does not verify" in str(info.value)


def test_local_evidence_for_another_nonce(identity: LocalIdentity) -> None:
    with pytest.raises(AttestationError) as info:
        _verify(identity, identity.attestation_doc(bytes(32)))
    assert info.value.checks == {"REPORT_DATA"}


def _verify(identity: LocalIdentity, document: bytes, **options: Any) -> Any:
    options.setdefault("expected_manifest", identity.manifest_bytes)
    options.setdefault("trusted_roots", [identity.trusted_root()])
    return verify_attestation(NONCE, document, **options)


def _fails(identity: LocalIdentity, document: bytes, **options: Any) -> AttestationError:
    with pytest.raises(AttestationError) as info:
        _verify(identity, document, **options)
    return info.value


# ---------------------------------------------------------------------------------------------
# Mutations of the local evidence
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["measurement", "host_data", "report_data", "chip_id"])
def test_flipped_signed_byte_fails_the_signature(identity: LocalIdentity, field: str) -> None:
    def flip(attestation: SnpAttestation) -> SnpAttestation:
        assert attestation.report is not None
        value = bytearray(getattr(attestation.report, field))
        value[0] ^= 0x01
        return replace(attestation, report=replace(attestation.report, **{field: bytes(value)}))

    error = _fails(identity, rebuild_response(identity.attestation_doc(NONCE), evidence=flip))
    assert error.checks == {"SIGNATURE"}
    assert "SIGNATURE report signature does not verify with the VCEK" in str(error)


def test_another_vcek_from_the_same_ask_fails_the_signature(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    other = make_vcek_certificate(
        identity_keys.ask_key,
        identity_keys.ask,
        ec.generate_private_key(ec.SECP384R1()).public_key(),
        chip_id=identity.chip_id,
        tcb=identity.tcb,
        now=datetime.now(UTC),
    )
    der = other.public_bytes(serialization.Encoding.DER)

    def swap(attestation: SnpAttestation) -> SnpAttestation:
        assert attestation.certificate_chain is not None
        chain = replace(attestation.certificate_chain, vcek_cert=der)
        return replace(attestation, certificate_chain=chain)

    error = _fails(identity, rebuild_response(identity.attestation_doc(NONCE), evidence=swap))
    assert error.checks == {"SIGNATURE"}


def test_clock_past_the_vcek_validity(identity: LocalIdentity) -> None:
    later = datetime.now(UTC) + timedelta(days=8 * 365)
    error = _fails(identity, identity.attestation_doc(NONCE), now=later)
    assert error.checks == {"VALIDITY"}
    assert "VCEK valid" in str(error)
    assert "ASK valid" not in str(error)


def test_milan_root_for_a_genoa_report(identity: LocalIdentity) -> None:
    error = _fails(identity, identity.attestation_doc(NONCE), trusted_roots=_milan_root())
    assert error.checks == {"CHAIN"}
    assert "no trusted root for product line Genoa (trusted product lines: ['Milan'])" in str(error)


def _crl(keys: IdentityKeys, *, revoke: list[int], next_update: datetime, key: Any = None) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(keys.ark.subject)
        .last_update(next_update - timedelta(days=8))
        .next_update(next_update)
    )
    for serial in revoke:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(datetime.now(UTC) - timedelta(hours=1))
            .build()
        )
    crl = builder.sign(key or keys.ark_key, hashes.SHA384(), rsa_padding=AMD_PSS_PADDING)
    return crl.public_bytes(serialization.Encoding.DER)


def _with_crl(document: bytes, crl: bytes | None) -> bytes:
    def attach(attestation: SnpAttestation) -> SnpAttestation:
        assert attestation.certificate_chain is not None
        extras = {} if crl is None else {CRL_EXTRA_KEY: crl}
        chain = replace(attestation.certificate_chain, extras=extras)
        return replace(attestation, certificate_chain=chain)

    return rebuild_response(document, evidence=attach)


def test_ask_listed_in_a_crl_signed_by_the_test_ark(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    soon = datetime.now(UTC) + timedelta(days=3)
    crl = _crl(identity_keys, revoke=[identity_keys.ask.serial_number], next_update=soon)
    error = _fails(identity, _with_crl(identity.attestation_doc(NONCE), crl))
    assert error.checks == {"REVOCATION"}
    assert f"the ASK (serial 0x{identity_keys.ask.serial_number:x}) is revoked" in str(error)
    assert "attached to the evidence" in str(error)
    # The same CRL fetched from a certificate source (nothing attached).
    error = _fails(
        identity,
        _with_crl(identity.attestation_doc(NONCE), None),
        certificates=StaticCertificateSource(crls={"Genoa": crl}),
    )
    assert error.checks == {"REVOCATION"}
    assert "revoked" in str(error)
    assert "fetched" in str(error)


def test_crl_listing_other_serials_passes(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    soon = datetime.now(UTC) + timedelta(days=3)
    crl = _crl(identity_keys, revoke=[12345, identity_keys.vcek.serial_number], next_update=soon)
    _verify(identity, _with_crl(identity.attestation_doc(NONCE), crl))


def test_revocation_fails_closed_without_a_usable_crl(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    document = identity.attestation_doc(NONCE)
    # No CRL at all.
    error = _fails(identity, _with_crl(document, None))
    assert error.checks == {"REVOCATION"}
    assert "no CRL" in str(error)
    # An expired attached CRL is not used; a certificate source supplies a fresh one.
    expired = _crl(identity_keys, revoke=[], next_update=datetime.now(UTC) - timedelta(hours=1))
    error = _fails(identity, _with_crl(document, expired))
    assert error.checks == {"REVOCATION"}
    fresh = identity.crl_der()
    _verify(
        identity,
        _with_crl(document, expired),
        certificates=StaticCertificateSource(crls={"Genoa": fresh}),
    )
    # A CRL signed by another key is neither used when attached nor accepted when fetched.
    impostor = _crl(
        identity_keys,
        revoke=[],
        next_update=datetime.now(UTC) + timedelta(days=1),
        key=_other_rsa_key(),
    )
    error = _fails(identity, _with_crl(document, impostor))
    assert error.checks == {"REVOCATION"}
    error = _fails(
        identity,
        _with_crl(document, impostor),
        certificates=StaticCertificateSource(crls={"Genoa": impostor}),
    )
    assert "not signed by the trusted ARK-Genoa" in str(error)
    # Garbage in the CRL slot is ignored like a missing CRL.
    error = _fails(identity, _with_crl(document, b"not a crl"))
    assert error.checks == {"REVOCATION"}


_RSA: list[Any] = []


def _other_rsa_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    if not _RSA:
        _RSA.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _RSA[0]


def test_one_byte_of_the_expected_manifest_changed(identity: LocalIdentity) -> None:
    expected = bytearray(identity.manifest_bytes)
    index = expected.index(b'"SANs":["coordinator"]') + len('"SANs":["coordinato')
    expected[index] = ord("s")
    error = _fails(identity, identity.attestation_doc(NONCE), expected_manifest=bytes(expected))
    assert error.checks == {"EXPECTED_MANIFEST"}
    assert "does not match the expected manifest" in str(error)


def test_one_byte_of_the_attested_manifest_changed(identity: LocalIdentity) -> None:
    tampered = identity.manifest_bytes.replace(b'"SANs":["coordinator"]', b'"SANs":["coordinatos"]')
    assert len(tampered) == len(identity.manifest_bytes)
    document = rebuild_response(identity.attestation_doc(NONCE), manifests=(tampered,))
    # The report data binds the manifest history: the evidence no longer matches.
    error = _fails(identity, document, expected_manifest=tampered)
    assert error.checks == {"REPORT_DATA"}


def test_two_manifests_in_the_history(identity: LocalIdentity, identity_keys: IdentityKeys) -> None:
    history = (b'{"old": "manifest"}', identity.manifest_bytes)
    document = forge_response(identity, identity_keys, manifests=history)
    error = _fails(identity, document)
    assert error.checks == {"MANIFEST_HISTORY"}
    assert "expected exactly one manifest in the history, got 2" in str(error)


def test_host_data_is_not_a_coordinator_policy(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    document = forge_response(identity, identity_keys, host_data=bytes(32))
    error = _fails(identity, document)
    assert error.checks == {"HOST_DATA"}
    assert "wrong policy hash for Coordinator" in str(error)


def _manifest_with(identity: LocalIdentity, **changes: Any) -> bytes:
    rv = replace(identity.manifest.snp[0], **changes)
    return replace(identity.manifest, snp=(rv,)).to_json()


def _verify_with_manifest(
    identity: LocalIdentity, keys: IdentityKeys, manifest: bytes, **report_changes: Any
) -> AttestationError:
    document = forge_response(identity, keys, manifests=(manifest,), **report_changes)
    return _fails(identity, document, expected_manifest=manifest)


def test_reported_tcb_below_the_minimum(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    minimum = MinimumTcb(bootloader_version=10, tee_version=0, snp_version=29, microcode_version=88)
    error = _verify_with_manifest(
        identity, identity_keys, _manifest_with(identity, minimum_tcb=minimum)
    )
    assert error.checks == {"REPORTED_TCB", "LAUNCH_TCB"}
    messages = [f.message for f in error.failures]
    assert "REPORTED_TCB snp=28 below minimum 29" in messages
    assert "LAUNCH_TCB snp=28 below minimum 29" in messages


def test_reference_values_that_still_match(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    # An empty AllowedChipIDs list allows any chip.
    manifest = _manifest_with(identity, allowed_chip_ids=())
    document = forge_response(identity, identity_keys, manifests=(manifest,))
    _verify(identity, document, expected_manifest=manifest)
    # The report may have PageSwapDisable without the reference value requiring it (the ID
    # key digest derives from the reference value's policy, so the evidence carries that one).
    policy = GuestPolicy(smt=True)
    manifest = _manifest_with(identity, guest_policy=policy)
    digest = id_key_digest(identity.measurement, policy.to_int())
    document = forge_response(identity, identity_keys, manifests=(manifest,), id_key_digest=digest)
    _verify(identity, document, expected_manifest=manifest)


@pytest.mark.parametrize(
    ("changes", "checks", "message"),
    [
        (
            {"guest_policy": GuestPolicy(smt=True, page_swap_disable=True, abi_minor=31)},
            {"GUEST_POLICY", "ID_KEY_DIGEST"},
            "required ABI version 0.31 is greater than the report's 0.0",
        ),
        (
            {
                "platform_info": PlatformInfo(
                    ecc_enabled=True, alias_check_complete=True, rapl_disabled=True
                )
            },
            {"PLATFORM_INFO"},
            "lacks RAPLDisabled, which the reference value requires",
        ),
        (
            {"minimum_mitigation_vector": 31},
            {"MITIGATION_VECTOR"},
            "LAUNCH_MIT_VECTOR 0xf lacks bits 0x10 of the minimum 0x1f",
        ),
        (
            {"allowed_chip_ids": ("AB" * 64,)},
            {"ALLOWED_CHIP_IDS"},
            "is not in the manifest's AllowedChipIDs (1 entries)",
        ),
        (
            {"trusted_measurement": "00" * 48},
            {"MEASUREMENT", "ID_KEY_DIGEST"},
            "does not equal TrustedMeasurement " + "00" * 48,
        ),
    ],
)
def test_reference_value_mismatches(
    identity: LocalIdentity,
    identity_keys: IdentityKeys,
    changes: dict[str, Any],
    checks: set[str],
    message: str,
) -> None:
    manifest = _manifest_with(identity, **changes)
    document = forge_response(identity, identity_keys, manifests=(manifest,))
    error = _fails(identity, document, expected_manifest=manifest)
    assert error.checks == checks
    assert message in str(error)


@pytest.mark.parametrize(
    ("changes", "checks", "message"),
    [
        ({"policy": 0x2030000 | 1 << 19}, {"GUEST_POLICY"}, "allows Debug"),
        ({"policy": 0x30000}, {"GUEST_POLICY"}, "lacks PageSwapDisable"),
        ({"policy": 0x2030000 | 1 << 18}, {"GUEST_POLICY"}, "allows MigrateMA"),
        ({"platform_info": 0x25}, {"PLATFORM_INFO"}, "has SMTEnabled"),
        ({"platform_info": 0x64}, {"PLATFORM_INFO"}, "reserved bits"),
        ({"vmpl": 1}, {"VMPL"}, "VMPL 1, expected 0"),
        ({"id_key_digest": bytes(48)}, {"ID_KEY_DIGEST"}, "is not the trusted ID key digest"),
        ({"current_mit_vector": 7}, {"MITIGATION_VECTOR"}, "CURRENT_MIT_VECTOR 0x7 lacks bits 0x8"),
        (
            {"chip_id": bytes(63) + b"\x01"},
            {"CHIP_ID", "ALLOWED_CHIP_IDS"},
            "does not equal the VCEK's HWID",
        ),
        (
            {"reported_tcb": TcbParts(bl=10, snp=29, ucode=88).to_int()},
            {"REPORTED_TCB"},
            "REPORTED_TCB bl=10 tee=0 snp=29 ucode=88 does not equal the VCEK's TCB",
        ),
        (
            {
                "current_tcb": TcbParts(bl=10, snp=27, ucode=88).to_int(),
                "committed_tcb": TcbParts(bl=10, snp=27, ucode=88).to_int(),
            },
            {"VCEK_TCB"},
            "VCEK_TCB bl=10 tee=0 snp=28 ucode=88 is above CURRENT_TCB",
        ),
        (
            {"committed_tcb": TcbParts(bl=11, snp=28, ucode=88).to_int()},
            {"COMMITTED_TCB"},
            "bl=11 above 10",
        ),
        ({"committed_build": 44}, {"FIRMWARE_VERSION"}, "committed firmware 1.55 build 44"),
        ({"committed_minor": 56}, {"FIRMWARE_VERSION"}, "is above current 1.55 build 43"),
        (
            {"launch_tcb": TcbParts(bl=10, snp=27, ucode=88).to_int()},
            {"LAUNCH_TCB"},
            "LAUNCH_TCB snp=27 below minimum 28",
        ),
    ],
)
def test_report_claim_mismatches(
    identity: LocalIdentity,
    identity_keys: IdentityKeys,
    changes: dict[str, Any],
    checks: set[str],
    message: str,
) -> None:
    error = _fails(identity, forge_response(identity, identity_keys, **changes))
    assert error.checks == checks
    assert message in str(error)


def test_signer_info_variants(identity: LocalIdentity, identity_keys: IdentityKeys) -> None:
    for signer_info, check, message in (
        (1 << 2, "ENDORSEMENT_KEY", "VLEK-signed reports are not accepted"),
        (7 << 2, "SIGNER_INFO", "not signed"),
        (3 << 2, "SIGNER_INFO", "reserved signing key 3"),
        (1 << 5, "SIGNER_INFO", "bits 5..31 must be 0"),
    ):
        # Not re-signed (a reserved value cannot even be encoded): SIGNER_INFO is checked first.
        def change(attestation: SnpAttestation, value: int = signer_info) -> SnpAttestation:
            assert attestation.report is not None
            return replace(attestation, report=replace(attestation.report, signer_info=value))

        document = rebuild_response(identity.attestation_doc(NONCE), evidence=change)
        error = _fails(identity, document)
        assert error.checks == {check}, signer_info
        assert message in str(error)


def test_signature_algorithm_and_reserved_signature_bytes(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    error = _fails(identity, forge_response(identity, identity_keys, signature_algo=2))
    assert error.checks == {"SIGNATURE"}
    assert "SIGNATURE_ALGO is 2" in str(error)

    def pad(attestation: SnpAttestation) -> SnpAttestation:
        assert attestation.report is not None
        signature = attestation.report.signature[:-1] + b"\x01"
        return replace(attestation, report=replace(attestation.report, signature=signature))

    error = _fails(identity, rebuild_response(identity.attestation_doc(NONCE), evidence=pad))
    assert error.checks == {"SIGNATURE"}
    assert "reserved bytes after R and S" in str(error)


def test_version_2_report_with_a_genoa_vcek(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    # go-sev-guest's v2 path requires a stepped product name; real Genoa VCEKs say "Genoa".
    document = forge_response(
        identity, identity_keys, version=2, cpuid1eax_fms=0, launch_mit_vector=0
    )
    error = _fails(identity, document)
    assert error.checks == {"KDS_EXTENSIONS"}
    assert "VCEK product name 'Genoa' is not accepted for a version 2 report" in str(error)


def test_missing_vcek_is_fetched_from_the_certificate_source(identity: LocalIdentity) -> None:
    def drop(attestation: SnpAttestation) -> SnpAttestation:
        assert attestation.certificate_chain is not None
        chain = replace(attestation.certificate_chain, vcek_cert=b"", ask_cert=b"", ark_cert=b"")
        return replace(attestation, certificate_chain=chain)

    document = rebuild_response(identity.attestation_doc(NONCE), evidence=drop)
    error = _fails(identity, document)
    assert error.checks == {"CERTIFICATES"}
    assert "no certificate source" in str(error)
    error = _fails(identity, document, certificates=StaticCertificateSource())
    assert error.checks == {"CERTIFICATES"}
    assert "fetching it failed: no VCEK for Genoa" in str(error)
    result = _verify(
        identity, document, certificates=StaticCertificateSource(vceks=[identity.vcek_der])
    )
    assert result.product == "Genoa"


def test_vcek_in_pem_form_is_accepted(identity: LocalIdentity) -> None:
    def to_pem(attestation: SnpAttestation) -> SnpAttestation:
        assert attestation.certificate_chain is not None
        pem = pem_encode("CERTIFICATE", attestation.certificate_chain.vcek_cert)
        chain = replace(attestation.certificate_chain, vcek_cert=pem)
        return replace(attestation, certificate_chain=chain)

    _verify(identity, rebuild_response(identity.attestation_doc(NONCE), evidence=to_pem))


def test_first_passing_reference_value_wins(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    good = identity.manifest.snp[0]
    milan = replace(good, product_name="Milan")
    wrong_measurement = replace(good, trusted_measurement="11" * 48)
    manifest = replace(identity.manifest, snp=(milan, wrong_measurement, good)).to_json()
    document = forge_response(identity, identity_keys, manifests=(manifest,))
    result = _verify(identity, document, expected_manifest=manifest)
    assert result.reference_value == "snp[2] (Genoa)"
    # Without the good one, the error lists each reference value's reasons.
    manifest = replace(identity.manifest, snp=(milan, wrong_measurement)).to_json()
    document = forge_response(identity, identity_keys, manifests=(manifest,))
    error = _fails(identity, document, expected_manifest=manifest)
    assert error.checks_for("snp[0] (Milan)") == {"PRODUCT"}
    assert error.checks_for("snp[1] (Genoa)") == {"MEASUREMENT", "ID_KEY_DIGEST"}
    assert "snp[0] (Milan): PRODUCT" in str(error)
    assert " | snp[1] (Genoa): MEASUREMENT" in str(error)


def test_snp_evidence_against_a_tdx_only_manifest_fails_closed(
    identity: LocalIdentity, identity_keys: IdentityKeys
) -> None:
    tdx = TdxReferenceValues(
        mr_td="00" * 48,
        mr_seam="00" * 48,
        rtmrs=("00" * 48, "00" * 48, "00" * 48, "00" * 48),
        xfam="00" * 8,
    )
    manifest = replace(identity.manifest, snp=(), tdx=(tdx,)).to_json()
    Manifest.from_json(manifest).validate()
    document = forge_response(identity, identity_keys, manifests=(manifest,))
    error = _fails(identity, document, expected_manifest=manifest)
    # SEV-SNP evidence, and no SNP reference value: the TDX validator refuses it.
    assert error.checks_for("tdx[0]") == error.checks == {"EVIDENCE"}
    assert "tdx[0]: EVIDENCE cannot decode the TDX evidence" in str(error)
    # With an SNP reference value too, the SNP one is used.
    both = replace(identity.manifest, tdx=(tdx,)).to_json()
    document = forge_response(identity, identity_keys, manifests=(both,))
    assert _verify(identity, document, expected_manifest=both).reference_value == GENOA


def test_manifest_invalid_or_missing(identity: LocalIdentity) -> None:
    invalid = _manifest_with(identity, guest_policy=GuestPolicy(smt=True, debug=True))
    document = rebuild_response(identity.attestation_doc(NONCE), manifests=(invalid,))
    error = _fails(identity, document)
    assert error.checks == {"MANIFEST"}
    assert "GuestPolicy.Debug: modifying this field is not permitted" in str(error)
    error = _fails(identity, rebuild_response(identity.attestation_doc(NONCE), manifests=()))
    assert error.checks == {"MANIFEST"}
    assert "no manifest" in str(error)


def test_mesh_ca_must_parse(identity: LocalIdentity, identity_keys: IdentityKeys) -> None:
    document = identity.attestation_doc(NONCE)
    response = AttestationResponse.from_json(document)
    for bad in (b"not pem", pem_encode("CERTIFICATE", b"\x30\x03\x02\x01\x01")):
        # The report data binds the mesh CA: re-sign a report for the bad CA bytes.
        rd = report_data(NONCE, transition_digest(response.manifests), response.root_ca, bad)

        def bind(attestation: SnpAttestation, rd: bytes = rd) -> SnpAttestation:
            assert attestation.report is not None
            report = replace(attestation.report, report_data=rd)
            return replace(attestation, report=sign_report(report, identity_keys.vcek_key))

        error = _fails(identity, rebuild_response(document, evidence=bind, mesh_ca=bad))
        assert error.checks == {"MESH_CA"}
        assert "cannot parse the mesh CA certificate" in str(error)


def test_nonce_must_be_32_bytes(identity: LocalIdentity) -> None:
    for nonce in (b"", bytes(31), bytes(33)):
        with pytest.raises(AttestationError) as info:
            verify_attestation(
                nonce,
                identity.attestation_doc(NONCE),
                expected_manifest=identity.manifest_bytes,
                trusted_roots=[identity.trusted_root()],
            )
        assert info.value.checks == {"NONCE"}
