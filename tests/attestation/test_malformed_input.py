"""Malformed input of any kind is an `AttestationError` (or `EvidenceError` for the parsers),
never another exception. Property-based where the input space is large."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from attestation_support import NONCE, rebuild_response
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from privatemode_proxy.attestation import (
    AttestationError,
    AttestationResponse,
    Manifest,
    ManifestError,
    SnpAttestation,
    decode_attest_response,
    load_trusted_root,
    verify_attestation,
)
from privatemode_proxy.attestation._amd import (
    kds_extensions,
)
from privatemode_proxy.attestation._errors import (
    EvidenceError,
)
from privatemode_proxy.attestation._roots import (
    parse_trusted_root,
)
from privatemode_proxy.attestation._snp import (
    CertificateChain,
    SnpReport,
)
from privatemode_proxy.attestation._x509 import (
    load_certificate,
)
from privatemode_proxy.local._issuer import LocalIdentity

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _verify(identity: LocalIdentity, document: bytes) -> None:
    verify_attestation(
        NONCE,
        document,
        expected_manifest=identity.manifest_bytes,
        trusted_roots=[identity.trusted_root()],
    )


# ---------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=2048))
@example(b"\x0a\xff\xff\xff\xff\x0f")  # a length far past the end
@example(b"\x12\x02\x3a\x05")  # a map entry truncated inside the certificate chain
def test_protobuf_decoder_raises_only_evidence_errors(data: bytes) -> None:
    try:
        attestation = SnpAttestation.from_proto(data)
    except EvidenceError:
        return
    if attestation.report is not None:
        try:
            attestation.report.to_abi_bytes()
        except EvidenceError:
            pass


@SETTINGS
@given(st.binary(min_size=0x4A0, max_size=0x4A0))
def test_abi_parser_raises_only_evidence_errors(data: bytes) -> None:
    try:
        report = SnpReport.from_abi_bytes(data)
    except EvidenceError:
        return
    assert report.to_abi_bytes() == data


@SETTINGS
@given(json_values)
def test_contrast_response_decoder_on_arbitrary_json(value: Any) -> None:
    try:
        AttestationResponse.from_json(json.dumps(value).encode())
    except EvidenceError:
        pass


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "version",
                "raw_attestation_doc",
                "attestation_type",
                "manifests",
                "root_ca",
                "mesh_ca",
            ]
        ),
        json_values,
    )
)
def test_contrast_response_decoder_on_wrong_field_types(value: dict[str, Any]) -> None:
    try:
        AttestationResponse.from_json(json.dumps(value).encode())
    except EvidenceError:
        pass


@SETTINGS
@given(json_values)
def test_manifest_decoder_on_arbitrary_json(value: Any) -> None:
    try:
        manifest = Manifest.from_json(json.dumps(value).encode())
    except ManifestError:
        return
    try:
        manifest.validate()
    except ManifestError:
        pass


@SETTINGS
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "Policies": st.dictionaries(st.text(max_size=70), json_values, max_size=3),
            "ReferenceValues": st.fixed_dictionaries(
                {},
                optional={
                    "snp": st.lists(
                        st.dictionaries(
                            st.sampled_from(
                                [
                                    "ProductName",
                                    "TrustedMeasurement",
                                    "MinimumTCB",
                                    "GuestPolicy",
                                    "PlatformInfo",
                                    "MinimumMitigationVector",
                                    "AllowedChipIDs",
                                ]
                            ),
                            json_values,
                        ),
                        max_size=2,
                    ),
                    "tdx": st.lists(json_values, max_size=2),
                },
            ),
            "WorkloadOwnerPubKeys": st.lists(st.text(max_size=20), max_size=2),
            "SeedshareOwnerPubKeys": st.lists(st.text(max_size=20), max_size=2),
        },
    )
)
def test_manifest_decoder_on_manifest_shaped_json(value: Any) -> None:
    try:
        Manifest.from_json(json.dumps(value).encode()).validate()
    except ManifestError:
        pass


@SETTINGS
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_wrapper_decoder_raises_only_evidence_errors(body: bytes) -> None:
    try:
        decode_attest_response(body)
    except EvidenceError:
        pass


@SETTINGS
@given(st.binary(max_size=600))
@example(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
@example(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
def test_certificate_loader_raises_only_evidence_errors(data: bytes) -> None:
    try:
        kds_extensions(load_certificate(data))
    except EvidenceError:
        pass


@SETTINGS
@given(st.binary(max_size=400))
def test_trusted_root_parser_raises_only_evidence_errors(data: bytes) -> None:
    with pytest.raises(EvidenceError):
        parse_trusted_root(data)


def test_bad_trusted_root_files(tmp_path: Path) -> None:
    for name, content in (
        ("empty.pem", b""),
        ("text.pem", b"hello"),
        ("bad-b64.pem", b"-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n"),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(AttestationError) as info:
            load_trusted_root(path)
        assert info.value.checks == {"TRUSTED_ROOT"}
    with pytest.raises(AttestationError, match="cannot read"):
        load_trusted_root(tmp_path / "missing.pem")


# ---------------------------------------------------------------------------------------------
# The verifier end to end
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=1024))
def test_verifier_on_arbitrary_bytes(data: bytes) -> None:
    with pytest.raises(AttestationError):
        verify_attestation(NONCE, data, expected_manifest=b"{}", trusted_roots=[])


@SETTINGS
@given(json_values)
def test_verifier_on_arbitrary_json(value: Any) -> None:
    with pytest.raises(AttestationError) as info:
        verify_attestation(
            NONCE, json.dumps(value).encode(), expected_manifest=b"{}", trusted_roots=[]
        )
    assert info.value.checks <= {"RESPONSE", "MANIFEST"}


@SETTINGS
@given(cut=st.integers(min_value=0, max_value=100_000))
def test_truncated_protobuf_is_an_attestation_error(identity: LocalIdentity, cut: int) -> None:
    document = identity.attestation_doc(NONCE)
    raw = AttestationResponse.from_json(document).raw_attestation_doc
    cut %= len(raw)
    try:
        _verify(identity, rebuild_response(document, raw_attestation_doc=raw[:cut]))
    except AttestationError as exc:
        assert exc.failures
        return
    # Accepted only when the cut falls exactly before the optional trailing SevProduct message
    # (a v5 report names its product line itself): the same evidence without it.
    genuine = SnpAttestation.from_proto(raw)
    assert SnpAttestation.from_proto(raw[:cut]) == replace(genuine, product=None)


@pytest.mark.parametrize("cut", [0, 1, 2, 3, 100, 1000, -1])
def test_truncated_protobuf_examples(identity: LocalIdentity, cut: int) -> None:
    document = identity.attestation_doc(NONCE)
    raw = AttestationResponse.from_json(document).raw_attestation_doc
    with pytest.raises(AttestationError) as info:
        _verify(identity, rebuild_response(document, raw_attestation_doc=raw[:cut]))
    if cut in (1, 2, 3, 100, 1000, -1):
        # Cut inside the report message (or just before its end): a decoding error.
        assert info.value.checks <= {"EVIDENCE", "REPORT", "CHAIN"}


def _verified_parts(document: bytes) -> tuple[Any, ...]:
    """What the verifier depends on: manifests, CAs, the report and the VCEK."""
    response = AttestationResponse.from_json(document)
    evidence = SnpAttestation.from_proto(response.raw_attestation_doc)
    chain = evidence.certificate_chain
    return (
        response.manifests,
        response.root_ca,
        response.mesh_ca,
        evidence.report,
        chain.vcek_cert if chain else None,
    )


@SETTINGS
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_corrupted_response_bytes(identity: LocalIdentity, position: int, value: int) -> None:
    original = identity.attestation_doc(NONCE)
    document = bytearray(original)
    position %= len(document)
    if document[position] == value:
        return
    document[position] = value
    try:
        _verify(identity, bytes(document))
    except AttestationError:
        return
    # Accepted: then only unverified content changed (version, policies, the ASK/ARK copies
    # in the evidence, which are never trusted) - nothing the verdict depends on.
    assert _verified_parts(bytes(document)) == _verified_parts(original)


@SETTINGS
@given(position=st.integers(min_value=0), value=st.integers(min_value=1, max_value=255))
def test_corrupted_evidence_bytes(identity: LocalIdentity, position: int, value: int) -> None:
    original = identity.attestation_doc(NONCE)
    raw = bytearray(AttestationResponse.from_json(original).raw_attestation_doc)
    position %= len(raw)
    raw[position] ^= value
    document = rebuild_response(original, raw_attestation_doc=bytes(raw))
    try:
        _verify(identity, document)
    except AttestationError:
        return
    assert _verified_parts(document) == _verified_parts(original)


@pytest.mark.parametrize(
    "field", ["raw_attestation_doc", "root_ca", "mesh_ca", "manifests", "attestation_type"]
)
@pytest.mark.parametrize("bad", ["%%%", "AAA", 7, {"a": 1}, ["x"]])
def test_bad_base64_or_wrong_type_per_field(identity: LocalIdentity, field: str, bad: Any) -> None:
    response = json.loads(identity.attestation_doc(NONCE))
    if field == "manifests":
        response[field] = [bad]
    else:
        response[field] = bad
    with pytest.raises(AttestationError) as info:
        _verify(identity, json.dumps(response).encode())
    assert info.value.checks == {"RESPONSE"}
    assert field in str(info.value)


def test_attestation_type_is_ignored(identity: LocalIdentity) -> None:
    response = json.loads(identity.attestation_doc(NONCE))
    response["attestation_type"] = [1, 2, 3]
    _verify(identity, json.dumps(response).encode())


@pytest.mark.parametrize(
    "vcek", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\n%%\n-----END CERTIFICATE-----\n"]
)
def test_bad_vcek_bytes(identity: LocalIdentity, vcek: bytes) -> None:
    def change(attestation: SnpAttestation) -> SnpAttestation:
        chain = attestation.certificate_chain or CertificateChain()
        return replace(attestation, certificate_chain=replace(chain, vcek_cert=vcek))

    document = rebuild_response(identity.attestation_doc(NONCE), evidence=change)
    with pytest.raises(AttestationError) as info:
        _verify(identity, document)
    assert info.value.checks == ({"CERTIFICATES"} if not vcek else {"ENDORSEMENT_KEY"})


def test_wrapped_document_with_bad_base64() -> None:
    body = json.dumps({"AttestationDoc": base64.b64encode(b"x").decode() + "!"}).encode()
    with pytest.raises(EvidenceError, match="AttestationDoc is not valid standard base64"):
        decode_attest_response(body)


def test_non_bytes_arguments(identity: LocalIdentity) -> None:
    with pytest.raises(AttestationError) as info:
        verify_attestation(
            "0" * 32,  # type: ignore[arg-type]
            identity.attestation_doc(NONCE),
            expected_manifest=identity.manifest_bytes,
            trusted_roots=[identity.trusted_root()],
        )
    assert info.value.checks == {"NONCE"}
    with pytest.raises(AttestationError) as info:
        verify_attestation(
            NONCE,
            identity.attestation_doc(NONCE).decode(),  # type: ignore[arg-type]
            expected_manifest=identity.manifest_bytes,
            trusted_roots=[identity.trusted_root()],
        )
    assert info.value.checks == {"RESPONSE"}
    with pytest.raises(AttestationError) as info:
        verify_attestation(
            NONCE,
            identity.attestation_doc(NONCE),
            expected_manifest=identity.manifest_bytes.decode(),  # type: ignore[arg-type]
            trusted_roots=[identity.trusted_root()],
        )
    assert info.value.checks == {"EXPECTED_MANIFEST"}
