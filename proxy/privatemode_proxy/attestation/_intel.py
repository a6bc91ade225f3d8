"""Intel's side of TDX attestation: the SGX root, PCS collateral, and where to get it.

The Intel SGX Root CA is embedded and pinned by SHA-256 (as the AMD roots are). Collateral —
TCB Info, QE Identity (signed JSON, each with its issuer chain), the PCK CRL and the root CA CRL —
comes from Intel's Provisioning Certification Service through a `TdxCollateralSource`: the
verifier never fetches anything itself. `PcsCollateralCache` fetches from PCS and keeps what it
fetched under ``<workspace>/pcs`` until its nextUpdate; `StaticTdxCollateral` serves given files
(offline use, tests, the local backend). Nothing a source returns is trusted: the verifier
checks signatures, chains and dates. shared/vectors/tdx/README.txt has the URL mapping.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ._errors import AttestationError, EvidenceError
from ._kds import CachedCollateralFetcher, CertificateUnavailableError, write_atomically
from ._x509 import (
    certificate_public_key,
    load_certificate,
    load_crl,
    name_value,
    pem_blocks,
    pem_encode,
)

__all__ = [
    "INTEL_ROOT_SHA256",
    "PCS_BASE_URL",
    "IntelRoot",
    "PcsCollateralCache",
    "StaticTdxCollateral",
    "TdxCollateral",
    "TdxCollateralSource",
    "intel_roots",
    "parse_intel_root",
]

PCS_BASE_URL = "https://api.trustedservices.intel.com"
INTEL_ROOT_CN = "Intel SGX Root CA"
#: SHA-256 of the DER of the Intel SGX Root CA (go-tdx-guest's and Contrast's trust anchor).
INTEL_ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


@dataclass(frozen=True)
class IntelRoot:
    """A trusted Intel SGX root certificate (self-signed, P-256)."""

    certificate: x509.Certificate
    source: str = ""

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def to_pem(self) -> bytes:
        return pem_encode("CERTIFICATE", self.der)

    def __repr__(self) -> str:
        return f"IntelRoot(source={self.source!r})"


def parse_intel_root(pem: bytes, *, source: str = "") -> IntelRoot:
    """One PEM certificate: self-signed, CN ``Intel SGX Root CA``, an ECDSA P-256 key."""
    blocks = pem_blocks(pem)
    if len(blocks) != 1 or blocks[0][0] != "CERTIFICATE":
        raise EvidenceError("an Intel root is one PEM CERTIFICATE block")
    cert = load_certificate(blocks[0][1])
    problems = []
    if name_value(cert.subject, NameOID.COMMON_NAME) != [INTEL_ROOT_CN]:
        problems.append(f"CN is not {INTEL_ROOT_CN!r}")
    key = certificate_public_key(cert, "Intel root")
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        problems.append("key is not ECDSA P-256")
    elif cert.issuer != cert.subject:
        problems.append("not self-issued")
    else:
        try:
            cert.verify_directly_issued_by(cert)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
            problems.append(f"self-signature does not verify ({type(exc).__name__})")
    if problems:
        raise EvidenceError(f"invalid Intel root {source}: " + "; ".join(problems))
    return IntelRoot(cert, source)


@functools.cache
def _embedded_intel_root() -> IntelRoot:
    data = resources.files(__package__).joinpath("intel_roots", "intel_sgx_root_ca.pem")
    root = parse_intel_root(data.read_bytes(), source="Intel SGX Root CA (embedded)")
    actual = hashlib.sha256(root.der).hexdigest()
    if actual != INTEL_ROOT_SHA256:
        raise AttestationError.single(
            "TRUSTED_ROOT",
            f"TRUSTED_ROOT embedded Intel SGX Root CA does not match its pin: sha256 {actual} "
            f"(want {INTEL_ROOT_SHA256})",
        )
    return root


def intel_roots() -> list[IntelRoot]:
    """The Intel SGX Root CA, the one TDX root Contrast trusts."""
    return [_embedded_intel_root()]


# =============================================================================================
# Collateral
# =============================================================================================


@dataclass(frozen=True)
class TdxCollateral:
    """Intel PCS collateral for one platform, as received (bytes; the verifier parses them)."""

    tcb_info: bytes
    """The TCB Info response body (JSON ``{"tcbInfo": ..., "signature": ...}``)."""
    tcb_info_issuer_chain: bytes
    """PEM: the TCB signing certificate, then the root."""
    qe_identity: bytes
    qe_identity_issuer_chain: bytes
    pck_crl: bytes
    """DER CRL of the PCK's issuing CA."""
    pck_crl_issuer_chain: bytes
    root_crl: bytes
    """DER CRL of the root CA."""


#: The file of each `TdxCollateral` field in a collateral directory (`write_collateral`).
_COLLATERAL_FILES = (
    ("tcb_info", "tcb_info.json"),
    ("tcb_info_issuer_chain", "tcb_info_issuer_chain.pem"),
    ("qe_identity", "qe_identity.json"),
    ("qe_identity_issuer_chain", "qe_identity_issuer_chain.pem"),
    ("pck_crl", "pck_crl.der"),
    ("pck_crl_issuer_chain", "pck_crl_issuer_chain.pem"),
    ("root_crl", "root_crl.der"),
)


@runtime_checkable
class TdxCollateralSource(Protocol):
    """Supplies Intel PCS collateral. Raises `CertificateFetchError` when fetching failed in a
    way that may pass later, `CertificateUnavailableError` when it has nothing to give."""

    def tdx_collateral(self, fmspc: bytes, ca: str, evaluation_data_number: int) -> TdxCollateral:
        """Collateral for a platform (`fmspc`, 6 bytes) whose PCK was issued by `ca`
        (``platform`` or ``processor``), with TCB Info of at least `evaluation_data_number`
        (0: the current one)."""
        ...


class StaticTdxCollateral:
    """A `TdxCollateralSource` over collateral held in memory (nothing is fetched)."""

    def __init__(self, collateral: TdxCollateral | Mapping[bytes, TdxCollateral]) -> None:
        self._by_fmspc = dict(collateral) if isinstance(collateral, Mapping) else None
        self._one = collateral if isinstance(collateral, TdxCollateral) else None

    @classmethod
    def from_directory(cls, directory: Path | str) -> StaticTdxCollateral:
        """Files named as `PcsCollateralCache` writes them (one platform)."""
        path = Path(directory)
        try:
            return cls(
                TdxCollateral(
                    **{field: (path / name).read_bytes() for field, name in _COLLATERAL_FILES}
                )
            )
        except OSError as exc:
            raise CertificateUnavailableError(
                f"no TDX collateral in {path}: {exc.strerror}"
            ) from None

    def tdx_collateral(self, fmspc: bytes, ca: str, evaluation_data_number: int) -> TdxCollateral:
        if self._one is not None:
            return self._one
        assert self._by_fmspc is not None
        try:
            return self._by_fmspc[fmspc]
        except KeyError:
            raise CertificateUnavailableError(
                f"no TDX collateral for FMSPC {fmspc.hex()}"
            ) from None


def write_collateral(directory: Path, collateral: TdxCollateral) -> None:
    """Write collateral in the layout `StaticTdxCollateral.from_directory` reads."""
    for field, name in _COLLATERAL_FILES:
        write_atomically(directory / name, getattr(collateral, field))


_CA_RE = re.compile(r"^(platform|processor)$")


class PcsCollateralCache(CachedCollateralFetcher):
    """Intel PCS (`https://api.trustedservices.intel.com`) with an on-disk cache under
    ``<workspace>/pcs/<fmspc>-<ca>/``, refreshed once a piece's nextUpdate has passed.

    Synchronous (the verifier runs off the event loop). Fetched content is parsed before it is
    cached; a rate-limited or failing PCS is retried a few times (`CachedCollateralFetcher`).
    """

    _subdirectory = "pcs"
    _default_base_url = PCS_BASE_URL

    def tdx_collateral(self, fmspc: bytes, ca: str, evaluation_data_number: int) -> TdxCollateral:
        if len(fmspc) != 6 or not _CA_RE.match(ca):
            raise CertificateUnavailableError(f"invalid FMSPC {fmspc.hex()} or CA {ca!r}")
        directory = self.directory / f"{fmspc.hex()}-{ca}"
        try:
            cached = StaticTdxCollateral.from_directory(directory).tdx_collateral(fmspc, ca, 0)
        except CertificateUnavailableError:
            cached = None
        if cached is not None and self._fresh(cached, evaluation_data_number):
            return cached
        collateral = self._fetch_all(fmspc, ca, evaluation_data_number)
        write_collateral(directory, collateral)
        return collateral

    # -- helpers ----------------------------------------------------------------------------

    def _fresh(self, collateral: TdxCollateral, evaluation_data_number: int) -> bool:
        now = self._clock()
        try:
            tcb = json.loads(collateral.tcb_info)["tcbInfo"]
            qe = json.loads(collateral.qe_identity)["enclaveIdentity"]
            dates = [_parse_time(tcb["nextUpdate"]), _parse_time(qe["nextUpdate"])]
            if int(tcb["tcbEvaluationDataNumber"]) < evaluation_data_number:
                return False
            for crl in (collateral.pck_crl, collateral.root_crl):
                next_update = load_crl(crl).next_update_utc
                if next_update is None:
                    return False
                dates.append(next_update)
        except (ValueError, KeyError, TypeError, EvidenceError):
            return False
        return all(now < date for date in dates)

    def _fetch_all(self, fmspc: bytes, ca: str, evaluation_data_number: int) -> TdxCollateral:
        tcb_url = f"{self._base_url}/tdx/certification/v4/tcb?fmspc={fmspc.hex()}"
        if evaluation_data_number > 0:
            tcb_url += f"&tcbEvaluationDataNumber={evaluation_data_number}"
        tcb_info, tcb_chain = self._fetch(tcb_url, "TCB Info", "TCB-Info-Issuer-Chain")
        qe_url = f"{self._base_url}/tdx/certification/v4/qe/identity"
        qe, qe_chain = self._fetch(qe_url, "QE Identity", "SGX-Enclave-Identity-Issuer-Chain")
        crl_url = f"{self._base_url}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"
        pck_crl, crl_chain = self._fetch(crl_url, "PCK CRL", "SGX-PCK-CRL-Issuer-Chain")
        root_url = _root_crl_url(qe_chain)
        root_crl, _ = self._fetch(root_url, "root CA CRL", None)
        for what, data in (("PCK CRL", pck_crl), ("root CA CRL", root_crl)):
            try:
                load_crl(data)
            except EvidenceError as exc:
                raise CertificateUnavailableError(
                    f"Intel PCS answered a bad {what}: {exc}"
                ) from None
        for what, data in (("TCB Info", tcb_info), ("QE Identity", qe)):
            try:
                json.loads(data)
            except ValueError:
                raise CertificateUnavailableError(f"Intel PCS answered a bad {what}") from None
        return TdxCollateral(tcb_info, tcb_chain, qe, qe_chain, pck_crl, crl_chain, root_crl)

    def _fetch(self, url: str, what: str, chain_header: str | None) -> tuple[bytes, bytes]:
        """The body, and the issuer chain PCS sends URL-quoted in `chain_header` (if any)."""
        response = self._get(url, what)
        if chain_header is None:
            return response.content, b""
        header = response.headers.get(chain_header)
        if not header:
            raise CertificateUnavailableError(
                f"Intel PCS answered {what} without the {chain_header} header"
            )
        return response.content, unquote(header).encode("utf-8")


def _root_crl_url(issuer_chain: bytes) -> str:
    """The first CRL distribution point of the issuer chain's root (an https URL)."""
    try:
        blocks = pem_blocks(issuer_chain)
        root = load_certificate(blocks[-1][1])
        points = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        for point in points:
            for name in point.full_name or ():
                if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith(
                    "https://"
                ):
                    return str(name.value)
    except (EvidenceError, IndexError, x509.ExtensionNotFound, ValueError):
        pass
    raise CertificateUnavailableError("the QE Identity issuer chain's root names no https CRL")


def _parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError("not a time")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
