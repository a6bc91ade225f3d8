"""The evidence format: protobuf <-> ABI, Contrast digests, ID key, manifest, KDS extensions."""

from __future__ import annotations

import base64
import hashlib
import json
import warnings
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from privatemode_proxy.attestation import (
    AttestationResponse,
    Manifest,
    ManifestError,
    SnpAttestation,
    SnpReport,
    TcbParts,
)
from privatemode_proxy.attestation._amd import (
    OID_BL_SPL,
    OID_CSP_ID,
    OID_FMC_SPL,
    OID_HWID,
    OID_PRODUCT_NAME,
    OID_SNP_SPL,
    OID_SPL4,
    OID_SPL5,
    OID_SPL6,
    OID_SPL7,
    OID_STRUCT_VERSION,
    OID_TEE_SPL,
    OID_UCODE_SPL,
    kds_extensions,
    kds_vcek_url,
)
from privatemode_proxy.attestation._contrast import (
    contrast_id_block,
    decode_attest_request,
    decode_attest_response,
    encode_attest_request,
    id_key_bytes,
    id_key_digest,
    recover_id_public_key,
    report_data,
    transition_digest,
    transition_digests,
)
from privatemode_proxy.attestation._errors import (
    EvidenceError,
)
from privatemode_proxy.attestation._roots import (
    parse_trusted_root,
)
from privatemode_proxy.attestation._snp import (
    CRL_EXTRA_KEY,
    GENOA_CPUID1EAX,
    CertificateChain,
    GuestPolicy,
    PlatformInfo,
    SevProduct,
    SignerInfo,
    cpuid_fms,
    product_line_from_cpuid,
)
from privatemode_proxy.attestation._x509 import (
    load_certificate,
)


def _minimal_report() -> SnpReport:
    """A well-formed (unsigned) version 5 Genoa report."""
    return SnpReport(
        version=5,
        policy=0x30000,
        family_id=bytes(16),
        image_id=bytes(16),
        signature_algo=1,
        report_data=bytes(64),
        measurement=bytes(range(48)),
        host_data=bytes(32),
        id_key_digest=bytes(48),
        author_key_digest=bytes(48),
        report_id=bytes(32),
        report_id_ma=bytes(32),
        chip_id=bytes(64),
        signature=bytes(512),
        cpuid1eax_fms=GENOA_CPUID1EAX,
    )


# ---------------------------------------------------------------------------------------------
# protobuf <-> ABI
# ---------------------------------------------------------------------------------------------


def test_genoa_protobuf_round_trips_to_the_raw_report(snp_dir: Path) -> None:
    proto = (snp_dir / "contrast" / "genoa_sevsnp_attestation.binpb").read_bytes()
    raw = (snp_dir / "snp" / "oak" / "genoa_oc_report.bin").read_bytes()
    attestation = SnpAttestation.from_proto(proto)
    assert attestation.report is not None
    assert attestation.report.to_abi_bytes() == raw
    assert SnpReport.from_abi_bytes(raw) == attestation.report
    assert attestation.product == SevProduct(name=2, stepping=0, machine_stepping=0)
    chain = attestation.certificate_chain
    assert chain is not None
    assert chain.vcek_cert == (snp_dir / "snp" / "oak" / "genoa_oc_vcek.der").read_bytes()
    assert chain.extras == {}
    # Our encoder emits exactly the same bytes (field order, empty machine_stepping wrapper).
    assert attestation.to_proto() == proto


def test_abi_round_trip_for_every_real_report(snp_dir: Path, expected: dict[str, Any]) -> None:
    for name in expected:
        raw = (snp_dir / name).read_bytes()
        report = SnpReport.from_abi_bytes(raw)
        assert report.to_abi_bytes() == raw, name
        assert SnpReport.from_proto(report.to_proto()) == report, name


def test_report_fields_match_expected_json(snp_dir: Path, expected: dict[str, Any]) -> None:
    for name, entry in expected.items():
        report = SnpReport.from_abi_bytes((snp_dir / name).read_bytes())
        want = entry["report"]
        assert report.version == want["version"]
        assert report.policy == want["policy"]
        assert report.platform_info == want["platform_info"]
        assert report.vmpl == want["vmpl"]
        assert report.measurement.hex() == want["measurement"]
        assert report.chip_id.hex() == want["chip_id"]
        assert report.report_data.hex() == want["report_data"]
        assert report.id_key_digest.hex() == want["id_key_digest"]
        assert report.launch_mit_vector == want["launch_mit_vector"]
        assert report.current_mit_vector == want["current_mit_vector"]
        for field in ("reported_tcb", "current_tcb", "committed_tcb", "launch_tcb"):
            assert getattr(report, field).to_bytes(8, "little").hex() == want[field], field
        assert report.reported_tcb_parts.as_dict() == entry["reported_tcb_parts"]
        version = f"{report.current_major}.{report.current_minor} build {report.current_build}"
        assert version == want["current_version"]
        if want["cpuid_fms"] is None:
            assert report.product_line() is None
        else:
            assert (
                "{:02x}{:02x}{:02x}".format(*cpuid_fms(report.cpuid1eax_fms)) == want["cpuid_fms"]
            )
            assert report.product_line() == entry["product_line"]
        signer = SignerInfo.from_int(report.signer_info)
        assert signer.signing_key_name == want["signing_key"]
        assert signer.author_key_en == want["author_key_en"]
        assert (
            kds_vcek_url(entry["product_line"], report.chip_id, report.reported_tcb_parts)
            == entry["kds_vcek_url"]
        )


def test_report_to_abi_rejects_wrong_field_sizes() -> None:
    report = _minimal_report()
    assert len(report.to_abi_bytes()) == 0x4A0
    with pytest.raises(EvidenceError, match="measurement is 47 bytes, expected 48"):
        replace(report, measurement=bytes(47)).to_abi_bytes()
    with pytest.raises(EvidenceError, match="current_build=256 does not fit"):
        replace(report, current_build=256).to_abi_bytes()
    with pytest.raises(EvidenceError, match="signer info"):
        replace(report, signer_info=2 << 2).to_abi_bytes()  # reserved signing key 2
    with pytest.raises(EvidenceError, match="version 2 report"):
        replace(report, version=2, cpuid1eax_fms=GENOA_CPUID1EAX).to_abi_bytes()


def test_report_from_abi_checks_reserved_bytes_and_policy() -> None:
    raw = bytearray(_minimal_report().to_abi_bytes())
    SnpReport.from_abi_bytes(bytes(raw))
    for offset in (0x04C, 0x190, 0x1EB, 0x1EF, 0x208, 0x29F):
        bad = bytearray(raw)
        bad[offset] = 1
        with pytest.raises(EvidenceError, match="reserved bytes"):
            SnpReport.from_abi_bytes(bytes(bad))
    bad = bytearray(raw)
    bad[0x008:0x010] = (0x30000 & ~(1 << 17)).to_bytes(8, "little")
    with pytest.raises(EvidenceError, match="bit 17 must be 1"):
        SnpReport.from_abi_bytes(bytes(bad))
    bad[0x008:0x010] = (0x30000 | 1 << 26).to_bytes(8, "little")
    with pytest.raises(EvidenceError, match=r"bits 26\.\.63 must be 0"):
        SnpReport.from_abi_bytes(bytes(bad))
    with pytest.raises(EvidenceError, match="1183 bytes"):
        SnpReport.from_abi_bytes(bytes(raw[:-1]))
    bad = bytearray(raw)
    bad[0:4] = (6).to_bytes(4, "little")
    with pytest.raises(EvidenceError, match="version 6"):
        SnpReport.from_abi_bytes(bytes(bad))


def test_cpuid_product_lines() -> None:
    assert GENOA_CPUID1EAX == 0x00A10F11
    assert cpuid_fms(GENOA_CPUID1EAX) == (0x19, 0x11, 0x01)
    assert product_line_from_cpuid(GENOA_CPUID1EAX) == "Genoa"
    assert product_line_from_cpuid(0x00A00F11) == "Milan"
    assert product_line_from_cpuid(0x00B00F21) == "Turin"
    assert product_line_from_cpuid(0x00800F12) == "Unknown"


def test_protobuf_merge_semantics_and_unknown_fields() -> None:
    report = _minimal_report()
    encoded = SnpAttestation(report=report).to_proto()
    # An unknown field (number 99, varint) is ignored; a repeated report message merges.
    extra = bytes([0x98, 0x06, 0x05])
    later = SnpAttestation(report=SnpReport(vmpl=2)).to_proto()
    decoded = SnpAttestation.from_proto(encoded + extra + later)
    assert decoded.report is not None
    assert decoded.report.vmpl == 2
    assert decoded.report.measurement == report.measurement
    # Map entries: the last value for a key wins.
    chain = CertificateChain(extras={CRL_EXTRA_KEY: b"a"}).to_proto()
    chain += CertificateChain(extras={CRL_EXTRA_KEY: b"b", "other": b"c"}).to_proto()
    assert CertificateChain.from_proto(chain).extras == {CRL_EXTRA_KEY: b"b", "other": b"c"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x0a\x05abc", "truncated"),
        (b"\x08", "truncated varint"),
        (b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x0b", "unsupported wire type 3"),
        (b"\x00\x01", "invalid field number 0"),
        (b"\x0a\x02\x08\x80", "truncated varint"),
        (b"\x08\x01", "must be length-delimited"),
    ],
)
def test_protobuf_decoder_rejects_malformed_input(data: bytes, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        SnpAttestation.from_proto(data)


def test_protobuf_rejects_oversized_uint32() -> None:
    big = SnpReport(policy=1 << 40).to_proto()  # policy is u64: fine
    assert SnpReport.from_proto(big).policy == 1 << 40
    vmpl_field = bytes([0x30]) + bytes([0x80, 0x80, 0x80, 0x80, 0x10])  # vmpl = 2**32
    with pytest.raises(EvidenceError, match=r"vmpl .* exceeds 32 bits"):
        SnpReport.from_proto(vmpl_field)


# ---------------------------------------------------------------------------------------------
# Contrast digests and the ID key
# ---------------------------------------------------------------------------------------------


def _contrast_vectors(snp_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((snp_dir / "contrast" / "contrast_vectors.json").read_text())
    return data


def test_report_data_golden_vector(snp_dir: Path) -> None:
    vectors = _contrast_vectors(snp_dir)
    (golden,) = (v for k, v in vectors.items() if k.startswith("ConstructReportData_golden"))
    got = report_data(
        bytes.fromhex(golden["nonce_hex"]),
        bytes.fromhex(golden["transition_digest_hex"]),
        golden["root_ca_bytes"].encode(),
        golden["mesh_ca_bytes"].encode(),
    )
    assert got.hex() == golden["want"]


def test_transition_digests(snp_dir: Path, synthetic: dict[str, Any]) -> None:
    vectors = _contrast_vectors(snp_dir)
    (chain,) = (v for k, v in vectors.items() if k.startswith("transition_chain"))
    manifests = [m.encode() for m in chain["manifests"]]
    assert [d.hex() for d in transition_digests(manifests)] == chain["digests_after_each"]
    assert transition_digest(manifests).hex() == chain["digests_after_each"][-1]
    assert transition_digest([]) == bytes(32)
    expected = synthetic["expected"]
    assert hashlib.sha256(synthetic["manifest"]).hexdigest() == expected["manifest_sha256"]
    assert transition_digest([synthetic["manifest"]]).hex() == expected["transition_digest"]
    response = AttestationResponse.from_json(synthetic["response"])
    got = report_data(
        bytes.fromhex(expected["nonce_hex"]),
        bytes.fromhex(expected["transition_digest"]),
        response.root_ca,
        response.mesh_ca,
    )
    assert got.hex() == expected["expected_report_data"]


def test_id_key_digests(snp_dir: Path) -> None:
    vectors = _contrast_vectors(snp_dir)
    (cases,) = (v for k, v in vectors.items() if k.startswith("id_key_digest"))
    assert len(cases) == 4
    for name, case in cases.items():
        block = bytes.fromhex(case["id_block_hex"])
        measurement = bytes.fromhex(case["launch_digest"])
        family, image = block[48:64], block[64:80]
        policy = int.from_bytes(block[88:96], "little")
        assert contrast_id_block(measurement, policy, family_id=family, image_id=image) == block
        key = recover_id_public_key(block)
        assert id_key_bytes(key)[:0x94].hex() == case["id_key_0x404_first_0x94_hex"], name
        assert len(id_key_bytes(key)) == 0x404
        digest = id_key_digest(measurement, policy, family_id=family, image_id=image)
        assert digest.hex() == case["id_key_digest"], name
        # Self-check: the constant signature (2, 1) verifies under the recovered key.
        public = ec.EllipticCurvePublicNumbers(key[0], key[1], ec.SECP384R1()).public_key()
        public.verify(encode_dss_signature(2, 1), block, ec.ECDSA(hashes.SHA384()))


def test_id_key_digest_of_the_synthetic_manifest(synthetic: dict[str, Any]) -> None:
    manifest = Manifest.from_json(synthetic["manifest"])
    rv = manifest.snp[0]
    digest = id_key_digest(bytes.fromhex(rv.trusted_measurement), rv.guest_policy.to_int())
    key = next(k for k in synthetic["expected"] if k.startswith("expected_id_key_digest"))
    assert digest.hex() == synthetic["expected"][key]


def test_guest_policy_and_platform_info_bits() -> None:
    policy = GuestPolicy(smt=True, page_swap_disable=True)
    assert policy.to_int() == 0x2030000
    assert GuestPolicy.from_int(0x2030000) == policy
    assert GuestPolicy.from_int(0x30000) == GuestPolicy(smt=True)
    assert GuestPolicy(abi_minor=31, smt=True).to_int() == 0x3001F
    info = PlatformInfo.from_int(0x25)
    assert info == PlatformInfo(smt_enabled=True, ecc_enabled=True, alias_check_complete=True)
    assert info.to_int() == 0x25
    assert PlatformInfo.from_int(0x80).tio_enabled
    for bad in (0x40, 0x100):
        with pytest.raises(EvidenceError, match="reserved bits"):
            PlatformInfo.from_int(bad)


def test_tcb_parts_layout_and_comparison() -> None:
    tcb = TcbParts.from_int(int.from_bytes(bytes.fromhex("0a00000000001954"), "little"))
    assert tcb == TcbParts(bl=10, tee=0, snp=25, ucode=84)
    assert tcb.to_int().to_bytes(8, "little").hex() == "0a00000000001954"
    minimum = TcbParts(bl=10, tee=0, snp=28, ucode=88)
    assert tcb.below(minimum) == ["snp=25 below minimum 28", "ucode=84 below minimum 88"]
    assert not minimum.le(tcb)
    assert tcb.le(minimum)
    assert str(tcb) == "bl=10 tee=0 snp=25 ucode=84"


# ---------------------------------------------------------------------------------------------
# JSON: the Contrast response, the Privatemode wrapper, Go decoding rules
# ---------------------------------------------------------------------------------------------


def test_privatemode_wrapper_and_contrast_response(synthetic: dict[str, Any]) -> None:
    assert decode_attest_response(synthetic["wrapped"]) == synthetic["response"]
    response = AttestationResponse.from_json(synthetic["response"])
    assert response.attestation_type == (1, 3, 9901, 2, 1)
    assert response.manifests == (synthetic["manifest"],)
    assert response.policies == ()
    assert response.root_ca.startswith(b"-----BEGIN CERTIFICATE-----")
    assert AttestationResponse.from_json(response.to_json()) == response
    body = json.loads(synthetic["expected"]["privatemode_attest_request_body"])
    assert decode_attest_request(json.dumps(body).encode()) == bytes(range(32))
    assert decode_attest_request(encode_attest_request(bytes(32))) == bytes(32)


def test_go_json_rules_case_insensitive_keys_and_nulls() -> None:
    doc = base64.b64encode(b"doc").decode()
    body = json.dumps({"attestationdoc": "AAAA", "ATTESTATIONDOC": doc}).encode()
    assert decode_attest_response(body) == b"doc"  # the last matching key wins, any case
    response = AttestationResponse.from_json(
        b'{"Version": null, "MANIFESTS": ["bQ=="], "policies": null, "unknown": 1}'
    )
    assert response.version == ""
    assert response.manifests == (b"m",)
    assert response.policies == ()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"manifests": "bQ=="}', "manifests must be a JSON array"),
        (b'{"manifests": ["b Q=="]}', r"manifests\[0\] is not valid standard base64"),
        (b'{"manifests": ["bQ"]}', "not valid standard base64"),
        (b'{"root_ca": 5}', "root_ca must be a JSON string"),
        (b'{"attestation_type": [1, "3"]}', "attestation_type element must be an integer"),
        (b"[]", "must be a JSON object"),
        (b'{"version": "x"', "not valid JSON"),
        (b'{"version": NaN}', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_contrast_response_rejects_wrong_shapes(body: bytes, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        AttestationResponse.from_json(body)


@pytest.mark.parametrize(
    "body",
    [b"{}", b'{"AttestationDoc": ""}', b'{"AttestationDoc": "%%%"}', b'{"AttestationDoc": 1}'],
)
def test_wrapper_rejects_missing_or_bad_document(body: bytes) -> None:
    with pytest.raises(EvidenceError):
        decode_attest_response(body)


def test_attest_request_needs_32_bytes() -> None:
    with pytest.raises(EvidenceError, match="32 bytes, got 16"):
        decode_attest_request(encode_attest_request(bytes(16)))


# ---------------------------------------------------------------------------------------------
# Manifest model and Validate()
# ---------------------------------------------------------------------------------------------


def _privatemode_like_manifest() -> dict[str, Any]:
    return {
        "Policies": {
            "ab" * 32: {"SANs": ["c"], "WorkloadSecretID": "c", "Role": "coordinator"},
            "cd" * 32: {"SANs": ["w"], "WorkloadSecretID": "w", "Role": ""},
        },
        "ReferenceValues": {
            "snp": [
                {
                    "ProductName": "Genoa",
                    "TrustedMeasurement": "AB" * 48,
                    "MinimumTCB": {
                        "BootloaderVersion": 10,
                        "TEEVersion": 0,
                        "SNPVersion": 28,
                        "MicrocodeVersion": 88,
                    },
                    "GuestPolicy": {"SMT": True, "PageSwapDisable": True},
                    "PlatformInfo": {"ECCEnabled": True, "AliasCheckComplete": True},
                    "MinimumMitigationVector": 15,
                    "AllowedChipIDs": ["0F" * 64],
                    "CPUs": 1,
                }
            ]
        },
    }


def test_manifest_parses_and_validates(synthetic: dict[str, Any]) -> None:
    manifest = Manifest.from_json(synthetic["manifest"])
    manifest.validate()
    assert manifest.to_json() == synthetic["manifest"]  # Go-style output, byte for byte
    assert manifest.coordinator_policy_hashes() == [bytes(32)]
    rv = manifest.snp[0]
    assert rv.minimum_tcb.parts() == TcbParts(bl=10, tee=0, snp=25, ucode=84)
    assert rv.guest_policy == GuestPolicy(smt=True)
    assert rv.platform_info == PlatformInfo(smt_enabled=True, alias_check_complete=True)

    pm = Manifest.from_json(json.dumps(_privatemode_like_manifest()).encode())
    pm.validate()
    assert pm.snp[0].guest_policy.to_int() == 0x2030000
    assert pm.snp[0].cpus == 1
    # Go's decoder matches field names case-insensitively.
    lower = json.dumps(_privatemode_like_manifest()).replace('"ProductName"', '"productname"')
    assert Manifest.from_json(lower.encode()).snp[0].product_name == "Genoa"


def _mutated(**path_values: Any) -> bytes:
    data = _privatemode_like_manifest()
    rv = data["ReferenceValues"]["snp"][0]
    for key, value in path_values.items():
        if key == "tcb_drop":
            del rv["MinimumTCB"][value]
        elif key == "policy":
            rv["GuestPolicy"].update(value)
        elif key == "role":
            data["Policies"]["ab" * 32]["Role"] = value
        elif key == "root":
            data.update(value)
        else:
            rv[key] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (_mutated(tcb_drop="SNPVersion"), r"MinimumTCB.SNPVersion: field cannot be empty"),
        (_mutated(ProductName="Turin"), "unknown product name 'Turin'"),
        (_mutated(TrustedMeasurement="ab" * 47), "TrustedMeasurement: not 96 hex"),
        (_mutated(TrustedMeasurement="zz" * 48), "TrustedMeasurement: not 96 hex"),
        (_mutated(policy={"SMT": False}), "GuestPolicy.SMT"),
        (_mutated(policy={"Debug": True}), "GuestPolicy.Debug"),
        (_mutated(policy={"MigrateMA": True}), "GuestPolicy.MigrateMA"),
        (_mutated(policy={"ABIMajor": 1}), "GuestPolicy.ABIMajor"),
        (_mutated(policy={"ABIMinor": 5}), "GuestPolicy.ABIMinor"),
        (_mutated(AllowedChipIDs=["00" * 63]), r"AllowedChipIDs\[0\]"),
        (_mutated(role="worker"), "unknown role 'worker'"),
        (_mutated(role=""), "no policy has the coordinator role"),
        (_mutated(root={"ReferenceValues": {}}), "reference values in manifest cannot be empty"),
        (_mutated(root={"Policies": {"abc": {"Role": "coordinator"}}}), "not 64 hex"),
        (_mutated(root={"WorkloadOwnerPubKeys": ["00"]}), r"WorkloadOwnerPubKeys\[0\]"),
        (_mutated(root={"SeedshareOwnerPubKeys": ["3000"]}), r"SeedshareOwnerPubKeys\[0\]"),
    ],
)
def test_manifest_validate_rules(manifest: bytes, message: str) -> None:
    parsed = Manifest.from_json(manifest)
    with pytest.raises(ManifestError, match=message):
        parsed.validate()


def test_manifest_abi_minor_31_and_page_swap_disable_are_allowed() -> None:
    Manifest.from_json(_mutated(policy={"ABIMinor": 31, "PageSwapDisable": False})).validate()


def test_manifest_tdx_rules() -> None:
    tdx = {
        "MrTd": "00" * 48,
        "MrSeam": "00" * 48,
        "Rtmrs": ["00" * 48] * 4,
        "Xfam": "00" * 8,
        "MinTCBEvaluationDataNumber": 21,
    }
    good = _mutated(root={"ReferenceValues": {"tdx": [tdx]}})
    manifest = Manifest.from_json(good)
    manifest.validate()
    assert manifest.tdx[0].min_tcb_evaluation_data_number == 21
    bad = _mutated(root={"ReferenceValues": {"tdx": [{**tdx, "Rtmrs": ["00" * 48] * 3}]}})
    with pytest.raises(ManifestError, match=r"RTMR\[4\]"):
        Manifest.from_json(bad).validate()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"Policies": []}', "Policies must be a JSON object"),
        (b'{"ReferenceValues": {"snp": [{"MinimumTCB": {"SNPVersion": 256}}]}}', "0..255"),
        (b'{"ReferenceValues": {"snp": [{"GuestPolicy": {"SMT": "yes"}}]}}', "true or false"),
        (b'{"ReferenceValues": {"snp": [{"MinimumMitigationVector": -1}]}}', "integer"),
        (b'{"ReferenceValues": {"snp": {}}}', "snp must be a JSON array"),
        (b"not json", "not valid JSON"),
    ],
)
def test_manifest_decoding_errors(body: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.from_json(body)


# ---------------------------------------------------------------------------------------------
# KDS extensions (real certificates and edge cases)
# ---------------------------------------------------------------------------------------------


def test_kds_extensions_of_real_vceks(snp_dir: Path, expected: dict[str, Any]) -> None:
    for entry in expected.values():
        cert = load_certificate((snp_dir / entry["files"]["endorsement_key_cert"]).read_bytes())
        with warnings.catch_warnings():  # cryptography warns about AMD's serial number 0
            warnings.simplefilter("ignore")
            assert cert.serial_number == 0
        ext = kds_extensions(cert)
        want = entry["ek_extensions"]
        assert ext.struct_version == want["1"]
        assert ext.product_name == want["2"]  # "Genoa" has no stepping; "Milan-B0" has one
        assert ext.tcb == TcbParts(
            bl=want["3.1"],
            tee=want["3.2"],
            snp=want["3.3"],
            spl4=want["3.4"],
            spl5=want["3.5"],
            spl6=want["3.6"],
            spl7=want["3.7"],
            ucode=want["3.8"],  # 219 for Oak's Milan: DER 02 02 00 DB
        )
        assert ext.hwid is not None
        assert ext.hwid.hex() == want["4"]  # raw bytes, no DER tag
        assert ext.csp_id is None


def test_turin_vcek_extensions_are_rejected(snp_dir: Path) -> None:
    cert = load_certificate((snp_dir / "snp" / "virtee" / "turin_vcek.der").read_bytes())
    with pytest.raises(EvidenceError, match=r"unexpected certificate extension .*3704\.1\.3\.9"):
        kds_extensions(cert)


def test_turin_vcek_is_signed_by_the_turin_ask(snp_dir: Path) -> None:
    from privatemode_proxy.attestation._amd import (
        verify_amd_signature,
    )

    root = parse_trusted_root((snp_dir / "amd-roots" / "ask_ark_turin.pem").read_bytes())
    assert root.product_line == "Turin"
    der = load_certificate((snp_dir / "snp" / "virtee" / "turin_vcek.der").read_bytes())
    verify_amd_signature(der, root.ask.public_key())
    milan = parse_trusted_root((snp_dir / "amd-roots" / "ask_ark_milan.pem").read_bytes())
    with pytest.raises(EvidenceError, match="does not verify"):
        verify_amd_signature(der, milan.ask.public_key())


_GOOD_EXTENSIONS: dict[x509.ObjectIdentifier, bytes] = {
    OID_STRUCT_VERSION: b"\x02\x01\x00",
    OID_PRODUCT_NAME: b"\x16\x05Genoa",
    OID_BL_SPL: b"\x02\x01\x0a",
    OID_TEE_SPL: b"\x02\x01\x00",
    OID_SNP_SPL: b"\x02\x01\x1c",
    OID_SPL4: b"\x02\x01\x00",
    OID_SPL5: b"\x02\x01\x00",
    OID_SPL6: b"\x02\x01\x00",
    OID_SPL7: b"\x02\x01\x00",
    OID_UCODE_SPL: b"\x02\x02\x00\xdb",
    OID_HWID: bytes(range(64)),
}
_EXT_KEY = ec.generate_private_key(ec.SECP384R1())


def _cert_with(extensions: dict[x509.ObjectIdentifier, bytes]) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SEV-VCEK")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_EXT_KEY.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    for oid, value in extensions.items():
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    return builder.sign(_EXT_KEY, hashes.SHA384())


def test_kds_extension_edge_cases() -> None:
    ext = kds_extensions(_cert_with(_GOOD_EXTENSIONS))
    assert ext.tcb == TcbParts(bl=10, tee=0, snp=28, ucode=219)
    assert ext.product_line == "Genoa"
    # HWID wrapped in an OCTET STRING is accepted too (go-sev-guest does).
    wrapped = {**_GOOD_EXTENSIONS, OID_HWID: b"\x04\x40" + bytes(range(64))}
    assert kds_extensions(_cert_with(wrapped)).hwid == bytes(range(64))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({OID_UCODE_SPL: b"\x02\x01\xdb"}, "negative INTEGER"),  # 219 needs the 00 prefix
        ({OID_BL_SPL: b"\x02\x02\x00\x0a"}, "non-minimal INTEGER"),
        ({OID_BL_SPL: b"\x02\x02\x01\x00"}, "not a uint8"),
        ({OID_SNP_SPL: b"\x02\x02\x00\x80"}, "exceeds 127"),
        ({OID_PRODUCT_NAME: b"\x0c\x05Genoa"}, "not tagged as an IA5String"),
        ({OID_TEE_SPL: b"\x02\x01\x00\x00"}, "trailing bytes"),
        ({OID_HWID: bytes(63)}, "DER"),
        ({OID_CSP_ID: b"\x16\x03csp"}, "both HWID and CSP_ID"),
        ({OID_FMC_SPL: b"\x02\x01\x00"}, "unexpected certificate extension"),
        ({OID_SPL4: None}, r"KDS extension spl4 \(1.3.6.1.4.1.3704.1.3.4\) is missing"),
    ],
)
def test_kds_extension_errors(
    changes: dict[x509.ObjectIdentifier, bytes | None], message: str
) -> None:
    extensions = dict(_GOOD_EXTENSIONS)
    for oid, value in changes.items():
        if value is None:
            del extensions[oid]
        else:
            extensions[oid] = value
    with pytest.raises(EvidenceError, match=message):
        kds_extensions(_cert_with(extensions))


# ---------------------------------------------------------------------------------------------
# Trusted roots
# ---------------------------------------------------------------------------------------------


def test_amd_root_files_parse_and_pin(snp_dir: Path) -> None:
    from privatemode_proxy.attestation import amd_roots

    roots = {root.product_line: root for root in amd_roots()}
    assert set(roots) == {"Milan", "Genoa"}
    assert roots["Genoa"].to_pem() == (snp_dir / "amd-roots" / "ask_ark_genoa.pem").read_bytes()
    assert roots["Milan"].to_pem() == (snp_dir / "amd-roots" / "ask_ark_milan.pem").read_bytes()
    digests = {
        line: (hashlib.sha256(r.ark_der).hexdigest(), hashlib.sha256(r.ask_der).hexdigest())
        for line, r in roots.items()
    }
    readme = (snp_dir / "README.txt").read_text()
    for line, (ark_sha, ask_sha) in digests.items():
        assert f"{line} ARK {ark_sha}" in readme
        assert f"{line} ASK {ask_sha}" in readme


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        (
            lambda pem: (
                pem.split(b"-----END CERTIFICATE-----\n")[0] + b"-----END CERTIFICATE-----\n"
            ),
            "two PEM",
        ),
        (lambda pem: pem + b"garbage", "unexpected text"),
        (lambda pem: pem.replace(b"MII", b"M!I", 1), "bad base64"),
        (lambda pem: b"\n".join(reversed(pem.split(b"\n-----BEGIN"))), "PEM|not an ARK|two PEM"),
    ],
)
def test_bad_trusted_root_files(snp_dir: Path, transform: Any, message: str) -> None:
    pem = (snp_dir / "amd-roots" / "ask_ark_genoa.pem").read_bytes()
    with pytest.raises(EvidenceError, match=message):
        parse_trusted_root(transform(pem))


def test_mixed_trusted_root_is_rejected(snp_dir: Path) -> None:
    genoa = parse_trusted_root((snp_dir / "amd-roots" / "ask_ark_genoa.pem").read_bytes())
    milan = parse_trusted_root((snp_dir / "amd-roots" / "ask_ark_milan.pem").read_bytes())
    mixed = replace(genoa, ark=milan.ark).to_pem()
    with pytest.raises(EvidenceError, match=r"not the ASK of Milan|not issued by the ARK"):
        parse_trusted_root(mixed)


def test_embedded_amd_roots_are_checked_against_their_pins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from privatemode_proxy.attestation import AttestationError, _roots

    filename, ark_sha, _ = _roots.AMD_ROOT_PINS["Genoa"]
    monkeypatch.setitem(_roots.AMD_ROOT_PINS, "Genoa", (filename, ark_sha, "00" * 32))
    _roots._amd_root.cache_clear()
    try:
        with pytest.raises(AttestationError) as info:
            _roots.amd_roots()
        assert info.value.checks == {"TRUSTED_ROOT"}
        assert "does not match its pin" in str(info.value)
    finally:
        monkeypatch.undo()
        _roots._amd_root.cache_clear()
    assert len(_roots.amd_roots()) == 2
