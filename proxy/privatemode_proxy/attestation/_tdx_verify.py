"""Verify a TDX quote v4 as go-tdx-guest's `verify.TdxQuote` does, then validate it.

`verify_tdx_quote` runs go-tdx-guest's checks in go-tdx-guest's order (shared/vectors/tdx/
README.txt, "ORDER OF CHECKS"): quote form, PCK chain and SGX extension, collateral (TCB Info and
QE Identity, signed JSON checked over the exact bytes received; PCK and root CRLs), the chain to a
trusted Intel root at time T with revocation, collateral expiry, the quote signature, the QE
report signature and binding, TCB level matching and status, the QE identity. The first failure
raises `TdxCheckError` naming the check, with go-tdx-guest's wording (`_tdx_validator` then
compares the quote with the reference values). No I/O: collateral comes as a `TdxCollateral`.
Over 600 lines on purpose: one function per go-tdx-guest step, kept in go-tdx-guest's order so
the two can be read side by side.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from ._errors import EvidenceError
from ._intel import INTEL_ROOT_CN, IntelRoot, TdxCollateral
from ._tdx import PckExtensions, TdxQuote, pck_chain_certificates, pck_extensions
from ._x509 import load_certificate, load_crl, name_value, pem_blocks

__all__ = [
    "TdxCheckError",
    "TdxQuoteVerification",
    "TdxVerifyOptions",
    "pck_collateral_key",
    "verify_tdx_quote",
]

PCK_PLATFORM_CA_CN = "Intel SGX PCK Platform CA"
PCK_PROCESSOR_CA_CN = "Intel SGX PCK Processor CA"
PCK_LEAF_CN = "Intel SGX PCK Certificate"
TCB_SIGNING_CN = "Intel SGX TCB Signing"
#: The TCB statuses Intel PCS defines; any other string is refused when decoding.
TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "OutOfDate",
        "Revoked",
        "ConfigurationNeeded",
        "OutOfDateConfigurationNeeded",
        "SWHardeningNeeded",
        "ConfigurationAndSWHardeningNeeded",
    }
)
_ECDSA_FAILURE = "x509: ECDSA verification failure"


class TdxCheckError(Exception):
    """One failed TDX check: ``check`` names it (e.g. ``PCK_CHAIN``), the message says why."""

    def __init__(self, check: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.check = check
        self.message = message
        self.transient = transient


@dataclass(frozen=True)
class TdxVerifyOptions:
    """go-tdx-guest `verify.Options` (what Contrast builds: collateral and revocation on)."""

    trusted_roots: Sequence[IntelRoot]
    get_collateral: bool = True
    check_revocations: bool = True
    evaluation_data_number: int = 0


@dataclass(frozen=True)
class TdxQuoteVerification:
    """What verification established (public data)."""

    quote: TdxQuote
    pck: x509.Certificate
    extensions: PckExtensions
    root: IntelRoot
    tcb_status: str | None = None
    tcb_evaluation_data_number: int | None = None


def _go_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# =============================================================================================
# Collateral parsing
# =============================================================================================


def _top_level_spans(text: str) -> dict[str, tuple[int, int]]:
    """The character span of each top-level value of a JSON object (json.RawMessage-style)."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    pos = len(text) - len(text.lstrip())
    if not text.startswith("{", pos):
        raise ValueError("not a JSON object")
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if text.startswith("}", pos):
            return spans
        key, pos = decoder.raw_decode(text, pos)
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if not isinstance(key, str) or not text.startswith(":", pos):
            raise ValueError("malformed JSON object")
        pos += 1
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        start = pos
        _, pos = decoder.raw_decode(text, pos)
        spans[key] = (start, pos)
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if text.startswith(",", pos):
            pos += 1
        elif not text.startswith("}", pos):
            raise ValueError("malformed JSON object")


@dataclass(frozen=True)
class _SignedJson:
    raw: bytes  # the exact bytes of the signed value
    body: dict[str, Any]
    signature: bytes  # r || s, 64 bytes
    signing_cert: x509.Certificate
    chain_root: x509.Certificate


def _signed_json(body: bytes, key: str, chain_pem: bytes, what: str) -> _SignedJson:
    try:
        text = body.decode("utf-8")
        spans = _top_level_spans(text)
        if key not in spans or "signature" not in spans:
            raise ValueError(f"no {key!r} or 'signature'")
        start, end = spans[key]
        raw = text[start:end].encode("utf-8")
        value = json.loads(raw)
        signature = bytes.fromhex(json.loads(text[slice(*spans["signature"])]))
        if not isinstance(value, dict) or len(signature) != 64:
            raise ValueError("unexpected shape")
        blocks = pem_blocks(chain_pem)
        if len(blocks) != 2 or any(label != "CERTIFICATE" for label, _ in blocks):
            raise ValueError("issuer chain is not two PEM certificates")
        signing, root = (load_certificate(der) for _, der in blocks)
    except (UnicodeDecodeError, ValueError, TypeError) as exc:  # EvidenceError included
        raise TdxCheckError("COLLATERAL", f"unable to receive {what}: {exc}") from None
    return _SignedJson(raw, value, signature, signing, root)


def _svns(level: Any, key: str) -> list[int]:
    components = level["tcb"][key]
    if not isinstance(components, list) or len(components) != 16:
        raise ValueError(f"{key} is not 16 components")
    return [int(c["svn"]) for c in components]


def _check_statuses(levels: Any) -> None:
    if not isinstance(levels, list):
        raise ValueError("tcbLevels is not a list")
    for level in levels:
        if level.get("tcbStatus") not in TCB_STATUSES:
            raise ValueError(f"unknown TCB status {level.get('tcbStatus')!r}")


# =============================================================================================
# Certificates
# =============================================================================================


def _check_intel_cert(
    cert: x509.Certificate, cn: str, parent: x509.Certificate, prefix: str
) -> None:
    """go-tdx-guest's rules for a root, intermediate or leaf: v3, ECDSA-SHA256, P-256, exact
    CN, signed by `parent` (itself for the root, which must also be self-issued)."""
    problem = ""
    try:
        key: Any = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if cert.version != x509.Version.v3:
        problem = "certificate is not X.509 v3"
    elif cert.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        problem = "certificate is not signed with ECDSA-SHA256"
    elif not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        problem = "certificate key is not ECDSA P-256"
    elif name_value(cert.subject, NameOID.COMMON_NAME) != [cn]:
        problem = f"certificate subject CN is not {cn!r}"
    elif parent is cert and cert.issuer != cert.subject:
        problem = "root certificate is not self-issued"
    else:
        try:
            cert.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            problem = (
                f"certificate signature verification using parent certificate failed: "
                f"{_ECDSA_FAILURE}"
            )
    if problem:
        raise TdxCheckError("PCK_CHAIN", f"{prefix}: {problem}")


def _validity(cert: x509.Certificate, now: datetime) -> str | None:
    if now < cert.not_valid_before_utc:
        return (
            "x509: certificate has expired or is not yet valid: current time "
            f"{_go_time(now)} is before {_go_time(cert.not_valid_before_utc)}"
        )
    if now > cert.not_valid_after_utc:
        return (
            "x509: certificate has expired or is not yet valid: current time "
            f"{_go_time(now)} is after {_go_time(cert.not_valid_after_utc)}"
        )
    return None


def _verify_to_trusted_root(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[IntelRoot],
    now: datetime,
) -> IntelRoot:
    """Go's x509 Verify for these short chains: validity of every certificate, then a path from
    `leaf` through `intermediates` to one of `roots` (raises ValueError with Go's wording)."""
    problem = _validity(leaf, now)
    if problem:
        raise ValueError(problem)
    candidates = [leaf, *intermediates]
    current = leaf
    for _ in range(len(candidates) + 1):
        for root in roots:
            if current.issuer == root.certificate.subject and _signed_by(current, root.certificate):
                problem = _validity(root.certificate, now)
                if problem:
                    raise ValueError(problem)
                return root
        parents = [
            c
            for c in intermediates
            if c is not current and current.issuer == c.subject and _signed_by(current, c)
        ]
        if not parents:
            break
        current = parents[0]
        problem = _validity(current, now)
        if problem:
            raise ValueError(problem)
    raise ValueError("x509: certificate signed by unknown authority")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    return (
        crl.issuer == issuer.subject
        and isinstance(key, ec.EllipticCurvePublicKey)
        and crl.is_signature_valid(key)
    )


def _ecdsa_p256_verify(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    if len(signature) != 64:
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _go_revoked_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


# =============================================================================================
# verify.TdxQuote
# =============================================================================================


def verify_tdx_quote(
    quote: TdxQuote | bytes,
    options: TdxVerifyOptions,
    *,
    collateral: TdxCollateral | None = None,
    now: datetime,
) -> TdxQuoteVerification:
    """Verify a quote (raw v4 bytes or a decoded `TdxQuote`); raises `TdxCheckError`.

    With ``options.get_collateral`` the caller must pass the `collateral` for the PCK's FMSPC
    and CA (see `pck_collateral_key`).
    """
    now = _utc(now)
    # 0-1. The quote's form.
    if isinstance(quote, (bytes, bytearray)):
        try:
            quote = TdxQuote.from_abi_bytes(bytes(quote))
        except EvidenceError as exc:
            raise TdxCheckError("QUOTE", str(exc)) from None
    try:
        quote.check()
    except EvidenceError as exc:
        raise TdxCheckError("QUOTE", str(exc)) from None
    # 2-3. The PCK chain and the PCK's SGX extension.
    try:
        leaf_der, intermediate_der, root_der = pck_chain_certificates(quote.pck_chain)
        pck, intermediate, chain_root = (
            load_certificate(d) for d in (leaf_der, intermediate_der, root_der)
        )
    except EvidenceError as exc:
        raise TdxCheckError("PCK_CHAIN", str(exc)) from None
    try:
        extensions = pck_extensions(pck)
    except EvidenceError as exc:
        raise TdxCheckError("PCK_EXTENSIONS", str(exc)) from None
    # 4. Collateral.
    tcb: _SignedJson | None = None
    qe: _SignedJson | None = None
    pck_crl = root_crl = None
    crl_chain: list[x509.Certificate] = []
    if options.get_collateral:
        pck_ca(pck)
        if collateral is None:
            raise TdxCheckError("COLLATERAL", "unable to receive tcbInfo: no collateral given")
        tcb = _signed_json(
            collateral.tcb_info, "tcbInfo", collateral.tcb_info_issuer_chain, "tcbInfo"
        )
        try:
            _check_statuses(tcb.body.get("tcbLevels"))
            for module in tcb.body.get("tdxModuleIdentities") or []:
                _check_statuses(module.get("tcbLevels"))
            number = int(tcb.body["tcbEvaluationDataNumber"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TdxCheckError("COLLATERAL", f"unable to receive tcbInfo: {exc}") from None
        if options.evaluation_data_number > 0 and number < options.evaluation_data_number:
            raise TdxCheckError(
                "COLLATERAL",
                "unable to receive tcbInfo: PCS responded with an outdated "
                f"TcbEvaluationDataNumber (got {number}, requested "
                f"{options.evaluation_data_number})",
            )
        qe = _signed_json(
            collateral.qe_identity,
            "enclaveIdentity",
            collateral.qe_identity_issuer_chain,
            "QeIdentity",
        )
        try:
            _check_statuses(qe.body.get("tcbLevels"))
        except (ValueError, AttributeError) as exc:
            raise TdxCheckError("COLLATERAL", f"unable to receive QeIdentity: {exc}") from None
        if options.check_revocations:
            try:
                pck_crl = load_crl(collateral.pck_crl)
                blocks = pem_blocks(collateral.pck_crl_issuer_chain)
                if len(blocks) != 2:
                    raise EvidenceError("issuer chain is not two PEM certificates")
                crl_chain = [load_certificate(der) for _, der in blocks]
            except EvidenceError as exc:
                raise TdxCheckError("COLLATERAL", f"unable to receive PCK CRL: {exc}") from None
            try:
                root_crl = load_crl(collateral.root_crl)
            except EvidenceError as exc:
                raise TdxCheckError("COLLATERAL", f"unable to receive Root CA CRL: {exc}") from None
    # 5. TEE type.
    if quote.tee_type != 0x81:
        raise TdxCheckError("QUOTE", "TEE type is not TDX")
    # 6. The PCK chain to a trusted root at `now`, and revocation.
    _check_intel_cert(chain_root, INTEL_ROOT_CN, chain_root, "unable to validate root cert")
    _check_intel_cert(
        intermediate,
        PCK_PLATFORM_CA_CN,
        chain_root,
        "unable to validate Intermediate CA certificate",
    )
    _check_intel_cert(pck, PCK_LEAF_CN, intermediate, "unable to validate PCK leaf certificate")
    try:
        root = _verify_to_trusted_root(pck, [intermediate], options.trusted_roots, now)
    except ValueError as exc:
        raise TdxCheckError("PCK_CHAIN", f"error verifying PCK Certificate: {exc}") from None
    if options.check_revocations:
        if not options.get_collateral:
            raise TdxCheckError(
                "REVOCATION",
                "unable to check for certificate revocation as GetCollateral parameter in the "
                "options is set to false",
            )
        assert pck_crl is not None and root_crl is not None
        if not _crl_signed_by(root_crl, chain_root):
            raise TdxCheckError("REVOCATION", "root CA CRL is not issued and signed by the root")
        if not _crl_signed_by(pck_crl, intermediate) or pck_crl.issuer != pck.issuer:
            raise TdxCheckError(
                "REVOCATION", "PCK CRL is not issued and signed by the PCK's intermediate CA"
            )
        for crl, certificate, which in (
            (root_crl, intermediate, "intermediate certificate"),
            (pck_crl, pck, "PCK Leaf certificate"),
        ):
            entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
            if entry is not None:
                raise TdxCheckError(
                    "REVOCATION",
                    f"{which} in PCK certificate chain was revoked at "
                    f"{_go_revoked_time(entry.revocation_date_utc)}",
                )
    # 7-9. Collateral dates, then the signed TCB Info and QE Identity.
    if tcb is not None and qe is not None:
        _check_collateral_dates(tcb, qe, pck_crl, root_crl, crl_chain, now)
        body = tcb.body
        if body.get("id") != "TDX" or body.get("version") != 3 or not body.get("tcbLevels"):
            raise TdxCheckError(
                "TCB_INFO", "tcbInfo is not a TDX TCB Info v3 with at least one TCB level"
            )
        _verify_signed(tcb, options, root_crl, now, "tcbInfo response verification failed")
        body = qe.body
        if body.get("id") != "TD_QE" or body.get("version") != 2 or not body.get("tcbLevels"):
            raise TdxCheckError(
                "QE_IDENTITY", "QeIdentity is not a TD_QE identity v2 with at least one level"
            )
        _verify_signed(qe, options, root_crl, now, "QeIdentity response verification failed")
    # 10. The quote itself.
    _check_quote_signatures(quote, pck)
    status = None
    if tcb is not None and qe is not None:
        status = _check_tcb(quote, extensions, tcb.body)
        _check_qe_identity(quote, qe.body)
    return TdxQuoteVerification(
        quote=quote,
        pck=pck,
        extensions=extensions,
        root=root,
        tcb_status=status,
        tcb_evaluation_data_number=int(tcb.body["tcbEvaluationDataNumber"]) if tcb else None,
    )


def pck_ca(pck: x509.Certificate) -> str:
    """``platform`` or ``processor``: which PCK CRL applies (from the PCK's issuer CN)."""
    issuer = name_value(pck.issuer, NameOID.COMMON_NAME)
    if issuer == [PCK_PLATFORM_CA_CN]:
        return "platform"
    if issuer == [PCK_PROCESSOR_CA_CN]:
        return "processor"
    raise TdxCheckError("COLLATERAL", "could not find CA from PCK certificate")


def pck_collateral_key(quote: TdxQuote) -> tuple[bytes, str]:
    """(FMSPC, CA) of a quote's PCK: what to ask a `TdxCollateralSource` for."""
    try:
        leaf = load_certificate(pck_chain_certificates(quote.pck_chain)[0])
        return pck_extensions(leaf).fmspc, pck_ca(leaf)
    except EvidenceError as exc:
        raise TdxCheckError("PCK_CHAIN", str(exc)) from None


def _check_collateral_dates(
    tcb: _SignedJson,
    qe: _SignedJson,
    pck_crl: x509.CertificateRevocationList | None,
    root_crl: x509.CertificateRevocationList | None,
    crl_chain: Sequence[x509.Certificate],
    now: datetime,
) -> None:
    def expired(what: str) -> TdxCheckError:
        return TdxCheckError(
            "COLLATERAL_EXPIRED", f"could not verify collaterals obtained: {what} has expired"
        )

    def next_update(body: dict[str, Any], what: str) -> datetime:
        try:
            return datetime.fromisoformat(str(body["nextUpdate"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            raise TdxCheckError("COLLATERAL", f"{what} has no valid nextUpdate") from None

    if now > next_update(tcb.body, "tcbInfo"):
        raise expired("tcbInfo")
    if now > next_update(qe.body, "QeIdentity"):
        raise expired("QeIdentity")
    for what, cert in (
        ("tcbInfo signing certificate", tcb.signing_cert),
        ("tcbInfo root certificate", tcb.chain_root),
        ("QeIdentity root certificate", qe.chain_root),
        ("QeIdentity signing certificate", qe.signing_cert),
    ):
        if now > cert.not_valid_after_utc:
            raise expired(what)
    if root_crl is not None and pck_crl is not None:
        for what, crl in (("root CA CRL", root_crl), ("PCK CRL", pck_crl)):
            if crl.next_update_utc is None or now > crl.next_update_utc:
                raise expired(what)
        for what, cert in zip(
            ("PCK CRL signing certificate", "PCK CRL root certificate"), crl_chain, strict=False
        ):
            if now > cert.not_valid_after_utc:
                raise expired(what)


def _verify_signed(
    signed: _SignedJson,
    options: TdxVerifyOptions,
    root_crl: x509.CertificateRevocationList | None,
    now: datetime,
    prefix: str,
) -> None:
    check = "TCB_INFO" if prefix.startswith("tcbInfo") else "QE_IDENTITY"
    try:
        _check_intel_cert(signed.chain_root, INTEL_ROOT_CN, signed.chain_root, "root")
        _check_intel_cert(signed.signing_cert, TCB_SIGNING_CN, signed.chain_root, "signing cert")
    except TdxCheckError as exc:
        raise TdxCheckError(check, f"{prefix}: {exc.message}") from None
    try:
        _verify_to_trusted_root(signed.signing_cert, [], options.trusted_roots, now)
    except ValueError as exc:
        raise TdxCheckError(check, f"{prefix}: {exc}") from None
    key = signed.signing_cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    if not _ecdsa_p256_verify(key, signed.signature, signed.raw):
        raise TdxCheckError(
            check,
            f"{prefix}: could not verify response body using the signing certificate: "
            f"{_ECDSA_FAILURE}",
        )
    if options.check_revocations and root_crl is not None:
        if not _crl_signed_by(root_crl, signed.chain_root):
            raise TdxCheckError(check, f"{prefix}: root CA CRL is not signed by the chain's root")
        if root_crl.get_revoked_certificate_by_serial_number(signed.signing_cert.serial_number):
            raise TdxCheckError(check, f"{prefix}: the signing certificate is revoked")


def _check_quote_signatures(quote: TdxQuote, pck: x509.Certificate) -> None:
    key_bytes = quote.attestation_key
    try:
        attestation_key = ec.EllipticCurvePublicNumbers(
            int.from_bytes(key_bytes[:32], "big"),
            int.from_bytes(key_bytes[32:], "big"),
            ec.SECP256R1(),
        ).public_key()
    except ValueError:
        raise TdxCheckError(
            "QUOTE_SIGNATURE",
            'attestation key in the quote is invalid: public key is not on curve "P-256"',
        ) from None
    if not _ecdsa_p256_verify(attestation_key, quote.signature, quote.header_and_body()):
        raise TdxCheckError(
            "QUOTE_SIGNATURE",
            "unable to verify message digest using quote's signature and ecdsa attestation key",
        )
    pck_key = pck.public_key()
    assert isinstance(pck_key, ec.EllipticCurvePublicKey)
    if not _ecdsa_p256_verify(pck_key, quote.qe_report_signature, quote.qe_report.to_abi_bytes()):
        raise TdxCheckError(
            "QE_REPORT",
            "error verifying QE report signature: QE report's signature verification using PCK "
            f"Leaf Certificate failed: {_ECDSA_FAILURE}",
        )
    binding = hashlib.sha256(key_bytes + quote.qe_auth_data).digest() + bytes(32)
    if quote.qe_report.report_data != binding:
        raise TdxCheckError(
            "QE_REPORT",
            "error verifying QE report data: QE Report Data does not match with value of SHA 256 "
            "calculated over the concatenation of ECDSA Attestation Key and QE Authenticated Data",
        )


def _check_tcb(quote: TdxQuote, ext: PckExtensions, info: dict[str, Any]) -> str:
    def fail(message: str) -> TdxCheckError:
        return TdxCheckError(
            "TCB_STATUS", f"TDX TCB info reported by Intel PCS failed TCB status check: {message}"
        )

    try:
        if str(info["fmspc"]).lower() != ext.fmspc.hex():
            raise TdxCheckError(
                "TCB_INFO",
                f"FMSPC from PCK Certificate({ext.fmspc.hex()}) is not equal to FMSPC value from "
                f"Intel PCS's reported TDX TCB info({info['fmspc']})",
            )
        if str(info["pceId"]).lower() != ext.pce_id.hex():
            raise TdxCheckError(
                "TCB_INFO",
                f"PCEID from PCK Certificate({ext.pce_id.hex()}) is not equal to PCEID from Intel "
                f"PCS's reported TDX TCB info({info['pceId']})",
            )
        module = info["tdxModule"]
        if bytes.fromhex(module["mrsigner"]) != quote.mr_signer_seam:
            raise TdxCheckError(
                "TCB_INFO",
                f"MRSIGNERSEAM value from TD Quote Body({quote.mr_signer_seam.hex()}) is not equal "
                f"to TdxModule.Mrsigner field in Intel PCS's reported TDX TCB info"
                f"({module['mrsigner'].lower()})",
            )
        mask = int.from_bytes(bytes.fromhex(module["attributesMask"]), "little")
        attributes = int.from_bytes(bytes.fromhex(module["attributes"]), "little")
        if int.from_bytes(quote.seam_attributes, "little") & mask != attributes:
            raise TdxCheckError(
                "TCB_INFO",
                "AttributesMask value applied to SEAMATTRIBUTES of the TD Quote Body does not "
                "match TdxModule.Attributes in Intel PCS's reported TDX TCB info",
            )
        tee_svn = quote.tee_tcb_svn
        first_tdx = 2 if tee_svn[1] > 0 else 0
        matched = None
        for level in info["tcbLevels"]:
            sgx, tdx = _svns(level, "sgxtcbcomponents"), _svns(level, "tdxtcbcomponents")
            if (
                all(a <= b for a, b in zip(sgx, ext.sgx_tcb_components, strict=True))
                and int(level["tcb"]["pcesvn"]) <= ext.pce_svn
                and all(tdx[i] <= tee_svn[i] for i in range(first_tdx, 16))
            ):
                matched = level
                break
        if matched is None:
            raise fail("no matching TCB level found")
        status = str(matched["tcbStatus"])
        if tee_svn[1] > 0:
            wanted = f"TDX_{tee_svn[1]:02X}"
            identity = next(
                (m for m in info.get("tdxModuleIdentities") or [] if m.get("id") == wanted), None
            )
            if identity is None:
                raise fail(f"no TDX module identity {wanted} in the TCB info")
            module_level = next(
                (lv for lv in identity["tcbLevels"] if int(lv["tcb"]["isvsvn"]) <= tee_svn[0]),
                None,
            )
            if module_level is None:
                raise fail(f"no matching TCB level for TDX module {wanted}")
            status = str(module_level["tcbStatus"])
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise TdxCheckError("TCB_INFO", f"malformed TDX TCB info: {exc!r}") from None
    if status == "OutOfDate":
        raise fail("unable to find latest status of TDX TCB, it is now OutOfDate")
    if status != "UpToDate":
        raise fail(f'TDX TCB Status is not "UpToDate", found "{status}"')
    return status


def _check_qe_identity(quote: TdxQuote, identity: dict[str, Any]) -> None:
    report = quote.qe_report
    try:
        misc_mask = int.from_bytes(bytes.fromhex(identity["miscselectMask"]), "big")
        misc = int.from_bytes(bytes.fromhex(identity["miscselect"]), "big")
        attr_mask = bytes.fromhex(identity["attributesMask"])
        attributes = bytes.fromhex(identity["attributes"])
        mrsigner = bytes.fromhex(identity["mrsigner"])
        prod_id = int(identity["isvprodid"])
        levels = identity["tcbLevels"]
        if report.misc_select & misc_mask != misc:
            raise TdxCheckError(
                "QE_IDENTITY",
                "MISCSELECT value from QE report masked with MISCSELECT mask does not match the "
                "QE Identity's MISCSELECT",
            )
        if bytes(a & m for a, m in zip(report.attributes, attr_mask, strict=True)) != attributes:
            raise TdxCheckError(
                "QE_IDENTITY",
                "ATTRIBUTES value from QE report masked with ATTRIBUTES mask does not match the "
                "QE Identity's ATTRIBUTES",
            )
        if report.mr_signer != mrsigner:
            raise TdxCheckError(
                "QE_IDENTITY",
                f'MRSIGNER value("{report.mr_signer.hex()}") in QE Report is not equal to '
                f'MRSIGNER value("{mrsigner.hex()}") in QE Identity',
            )
        if report.isv_prod_id != prod_id:
            raise TdxCheckError(
                "QE_IDENTITY",
                f"ISV PRODID value({report.isv_prod_id}) in QE Report is not equal to ISV PRODID "
                f"value({prod_id}) in QE Identity",
            )
        level = next((lv for lv in levels if int(lv["tcb"]["isvsvn"]) <= report.isv_svn), None)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise TdxCheckError("QE_IDENTITY", f"malformed QE Identity: {exc!r}") from None
    prefix = "QE Identity reported by Intel PCS failed TCB status check: "
    if level is None:
        raise TdxCheckError("QE_IDENTITY", prefix + "no matching TCB level found")
    status = str(level["tcbStatus"])
    if status == "OutOfDate":
        raise TdxCheckError("QE_IDENTITY", prefix + "QE TCB is OutOfDate")
    if status != "UpToDate":
        raise TdxCheckError(
            "QE_IDENTITY", prefix + f'QE TCB Status is not "UpToDate", found "{status}"'
        )
