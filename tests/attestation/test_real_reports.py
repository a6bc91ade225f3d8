"""The core SEV-SNP checks on every real report in the public vectors, and mutations of them."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from attestation_support import T_2025
from privatemode_proxy.attestation import (
    AttestationError,
    amd_roots,
    verify_snp_report,
)
from privatemode_proxy.attestation._roots import (
    parse_trusted_root,
)


def _at(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["T"].replace("Z", "+00:00"))


def _files(snp_dir: Path, entry: dict[str, Any]) -> tuple[bytes, bytes]:
    files = entry["files"]
    return (
        (snp_dir / files["report"]).read_bytes(),
        (snp_dir / files["endorsement_key_cert"]).read_bytes(),
    )


REPORTS = [
    "snp/gsg/milan_v2_report.bin",
    "snp/virtee/milan_v2_report.bin",
    "snp/oak/genoa_oc_report.bin",
    "snp/oak/milan_oc_release_report.bin",
    "snp/oak/milan_oc_staging_report.bin",
]


def test_every_real_report_is_listed(expected: dict[str, Any]) -> None:
    assert sorted(expected) == sorted(REPORTS)


@pytest.mark.parametrize("name", REPORTS)
def test_core_verdict_at_t(name: str, snp_dir: Path, expected: dict[str, Any]) -> None:
    entry = expected[name]
    report, vcek = _files(snp_dir, entry)
    assert entry["expected_core_snp_verdict_at_T"] == "VALID"
    result = verify_snp_report(report, vcek, trusted_roots=amd_roots(), now=_at(entry))
    assert result.product_line == entry["product_line"]
    assert result.root.product_line == entry["product_line"]
    assert result.raw_report == report
    assert result.extensions.tcb.as_dict() == entry["reported_tcb_parts"]
    assert result.extensions.hwid is not None
    assert result.extensions.hwid.hex() == entry["report"]["chip_id"]
    assert result.vcek.issuer.rfc4514_string().startswith(f"CN={entry['ek_issuer_cn']},")


@pytest.mark.parametrize("name", REPORTS)
def test_core_verdict_outside_the_vcek_validity(
    name: str, snp_dir: Path, expected: dict[str, Any]
) -> None:
    entry = expected[name]
    report, vcek = _files(snp_dir, entry)
    start, end = (datetime.fromisoformat(t) for t in entry["ek_validity"])
    verify_snp_report(report, vcek, trusted_roots=amd_roots(), now=start)  # inclusive bounds
    verify_snp_report(report, vcek, trusted_roots=amd_roots(), now=end)
    for when in (start - timedelta(seconds=1), end + timedelta(seconds=1)):
        with pytest.raises(AttestationError) as info:
            verify_snp_report(report, vcek, trusted_roots=amd_roots(), now=when)
        assert info.value.checks == {"VALIDITY"}
        assert "VCEK valid" in str(info.value)


def test_virtee_flipped_report_byte_breaks_the_signature(
    snp_dir: Path, expected: dict[str, Any]
) -> None:
    entry = expected["snp/virtee/milan_v2_report.bin"]
    report, vcek = _files(snp_dir, entry)
    tampered = bytearray(report)
    tampered[21] ^= 0x80  # inside FAMILY_ID, in the signed part
    with pytest.raises(AttestationError) as info:
        verify_snp_report(bytes(tampered), vcek, trusted_roots=amd_roots(), now=_at(entry))
    assert info.value.checks == {"SIGNATURE"}
    assert "report signature does not verify with the VCEK" in str(info.value)


@pytest.mark.parametrize("name", REPORTS)
@pytest.mark.parametrize(
    "offset",
    [0x004, 0x010, 0x020, 0x050, 0x08F, 0x090, 0x0C0, 0x0E0, 0x140, 0x180, 0x1A0, 0x1F8, 0x200],
)
def test_flipping_a_signed_byte_breaks_the_signature(
    name: str, offset: int, snp_dir: Path, expected: dict[str, Any]
) -> None:
    entry = expected[name]
    report, vcek = _files(snp_dir, entry)
    tampered = bytearray(report)
    tampered[offset] ^= 0x01
    with pytest.raises(AttestationError) as info:
        verify_snp_report(bytes(tampered), vcek, trusted_roots=amd_roots(), now=_at(entry))
    if offset in (0x1F8, 0x200) and entry["report"]["version"] < 5:
        # The mitigation vectors are version 5 fields: before that their bytes are reserved.
        assert info.value.checks == {"REPORT"}
        assert "reserved bytes" in str(info.value)
        assert "MIT_VECTOR is a version 5 field" in str(info.value)
    else:
        assert info.value.checks == {"SIGNATURE"}


@pytest.mark.parametrize("offset", [0x04C, 0x18B, 0x208, 0x29F])
def test_reserved_bytes_are_rejected_before_the_signature(
    offset: int, snp_dir: Path, expected: dict[str, Any]
) -> None:
    entry = expected["snp/oak/genoa_oc_report.bin"]
    report, vcek = _files(snp_dir, entry)
    tampered = bytearray(report)
    tampered[offset] = 0x01
    with pytest.raises(AttestationError) as info:
        verify_snp_report(bytes(tampered), vcek, trusted_roots=amd_roots(), now=_at(entry))
    assert info.value.checks == {"REPORT"}
    assert "reserved bytes" in str(info.value)


def test_virtee_flipped_vcek_byte_breaks_the_chain(snp_dir: Path, expected: dict[str, Any]) -> None:
    entry = expected["snp/virtee/milan_v2_report.bin"]
    report, vcek = _files(snp_dir, entry)
    tampered = bytearray(vcek)
    tampered[40] ^= 0xFF
    with pytest.raises(AttestationError) as info:
        verify_snp_report(report, bytes(tampered), trusted_roots=amd_roots(), now=_at(entry))
    # Byte 40 is inside the TBS: the VCEK still parses, but the ASK's signature breaks.
    assert info.value.checks == {"CHAIN"}
    assert "VCEK by ASK: RSA-PSS signature does not verify" in str(info.value)


def test_swapped_vcek_fails(snp_dir: Path, expected: dict[str, Any]) -> None:
    # A genuine Milan VCEK of another chip: chains fine, but did not sign this report.
    entry = expected["snp/gsg/milan_v2_report.bin"]
    report, _ = _files(snp_dir, entry)
    _, other = _files(snp_dir, expected["snp/virtee/milan_v2_report.bin"])
    with pytest.raises(AttestationError) as info:
        verify_snp_report(report, other, trusted_roots=amd_roots(), now=T_2025)
    assert info.value.checks == {"SIGNATURE"}


def test_genoa_report_against_milan_root(snp_dir: Path, expected: dict[str, Any]) -> None:
    entry = expected["snp/oak/genoa_oc_report.bin"]
    report, vcek = _files(snp_dir, entry)
    milan = parse_trusted_root((snp_dir / "amd-roots" / "ask_ark_milan.pem").read_bytes())
    with pytest.raises(AttestationError) as info:
        verify_snp_report(report, vcek, trusted_roots=[milan], now=_at(entry))
    assert info.value.checks == {"CHAIN"}
    assert "no trusted root for product line Genoa" in str(info.value)
    # A Milan ASK/ARK relabelled as Genoa does not help: the signatures do not verify.
    relabelled = replace(milan, product_line="Genoa")
    with pytest.raises(AttestationError) as info:
        verify_snp_report(report, vcek, trusted_roots=[relabelled], now=_at(entry))
    assert info.value.checks == {"CHAIN"}
    assert "does not chain to a trusted root" in str(info.value)
