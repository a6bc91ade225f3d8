"""Hypothesis on the TDX parsers and verifier: no crash, only their own error types.

Parsers raise `EvidenceError`; `verify_tdx_quote` raises `TdxCheckError`; a mutated quote that
still verifies differs from the genuine one only in its unsigned extra bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from privatemode_proxy.attestation._errors import EvidenceError
from privatemode_proxy.attestation._intel import TdxCollateral, parse_intel_root
from privatemode_proxy.attestation._tdx import TdxQuote, pck_chain_certificates
from privatemode_proxy.attestation._tdx_verify import (
    TdxCheckError,
    TdxVerifyOptions,
    verify_tdx_quote,
)
from test_tdx_vectors import TDX, case_collateral

T_GSG = datetime(2023, 7, 1, 1, tzinfo=UTC)
T_SYNTHETIC = datetime(2026, 1, 15, tzinfo=UTC)
GSG_RAW = (TDX / "gsg" / "quote_v4_spr_e4.dat").read_bytes()
GSG_PROTO = (TDX / "gsg" / "quote_v4_spr_e4.binpb").read_bytes()
GSG_OPTIONS = TdxVerifyOptions(
    trusted_roots=[parse_intel_root((TDX / "gsg" / "intel_sgx_root_ca.pem").read_bytes())],
    get_collateral=False,
    check_revocations=False,
)
SYNTHETIC_PROTO = (TDX / "synthetic" / "quote_v4_synthetic.binpb").read_bytes()
SYNTHETIC_OPTIONS = TdxVerifyOptions(
    trusted_roots=[parse_intel_root((TDX / "synthetic" / "test_root_ca.pem").read_bytes())],
    evaluation_data_number=21,
)


def _synthetic_collateral() -> TdxCollateral:
    return case_collateral("synthetic-full-pass")


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(
    ("parse", "max_size"),
    [
        (TdxQuote.from_abi_bytes, 3000),
        (TdxQuote.from_proto, 3000),
        (lambda data: pck_chain_certificates(b"-----BEGIN CERTIFICATE-----\n" + data), 600),
    ],
    ids=["raw quote", "protobuf quote", "PCK chain"],
)
@FAST
@given(data=st.data())
def test_parsers_raise_only_evidence_errors(
    parse: Callable[[bytes], object], max_size: int, data: st.DataObject
) -> None:
    try:
        parse(data.draw(st.binary(max_size=max_size)))
    except EvidenceError:
        pass


@FAST
@given(st.integers(0, len(GSG_RAW) - 1), st.integers(1, 255))
def test_mutated_raw_quote_is_refused_or_only_unsigned_bytes_changed(pos: int, xor: int) -> None:
    mutated = bytearray(GSG_RAW)
    mutated[pos] ^= xor
    try:
        verification = verify_tdx_quote(bytes(mutated), GSG_OPTIONS, now=T_GSG)
    except TdxCheckError:
        return
    _assert_equivalent(verification.quote, TdxQuote.from_abi_bytes(GSG_RAW))


def _assert_equivalent(accepted: TdxQuote, genuine: TdxQuote) -> None:
    """Only unsigned bytes changed: the extra bytes, or the PEM layout of the same chain."""
    assert pck_chain_certificates(accepted.pck_chain) == pck_chain_certificates(genuine.pck_chain)
    unsigned = {"extra_bytes": b"", "pck_chain": b"", "pck_chain_size": 0}
    assert replace(accepted, **unsigned) == replace(genuine, **unsigned)


@FAST
@given(st.integers(0, len(GSG_PROTO) - 1), st.integers(1, 255))
def test_mutated_protobuf_quote_is_refused_or_equivalent(pos: int, xor: int) -> None:
    mutated = bytearray(GSG_PROTO)
    mutated[pos] ^= xor
    try:
        quote = TdxQuote.from_proto(bytes(mutated))
        verification = verify_tdx_quote(quote, GSG_OPTIONS, now=T_GSG)
    except (EvidenceError, TdxCheckError):
        return
    _assert_equivalent(verification.quote, TdxQuote.from_proto(GSG_PROTO))


@pytest.mark.parametrize("field", ["tcb_info", "qe_identity", "pck_crl", "root_crl"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_collateral_is_refused_or_harmless(field: str, data: st.DataObject) -> None:
    collateral = _synthetic_collateral()
    original = getattr(collateral, field)
    pos = data.draw(st.integers(0, len(original) - 1))
    xor = data.draw(st.integers(1, 255))
    mutated = bytearray(original)
    mutated[pos] ^= xor
    quote = TdxQuote.from_proto(SYNTHETIC_PROTO)
    try:
        verify_tdx_quote(
            quote,
            SYNTHETIC_OPTIONS,
            collateral=replace(collateral, **{field: bytes(mutated)}),
            now=T_SYNTHETIC,
        )
    except TdxCheckError:
        return
    # Accepted: only bytes outside what is signed can have changed (JSON whitespace around the
    # signed value, a CRL's unsigned outer algorithm identifier, ...), never the content.


def test_genuine_synthetic_quote_passes_with_full_collateral() -> None:
    # The guard of the mutation test above: unmutated, it passes.
    result = verify_tdx_quote(
        TdxQuote.from_proto(SYNTHETIC_PROTO),
        SYNTHETIC_OPTIONS,
        collateral=_synthetic_collateral(),
        now=T_SYNTHETIC,
    )
    assert result.tcb_status == "UpToDate"


def test_sizes_that_disagree_with_the_contents_are_refused() -> None:
    # Stricter than go-tdx-guest: the sizes are unsigned, so they must match what they describe.
    genuine = TdxQuote.from_proto(GSG_PROTO)
    genuine.check()
    for changes in (
        {"signed_data_size": genuine.signed_data_size + 1},
        {"certification_data_size": genuine.certification_data_size - 1},
    ):
        with pytest.raises(EvidenceError, match=r"QuoteV4 invalid: .* size"):
            genuine.replace(**changes).check()
