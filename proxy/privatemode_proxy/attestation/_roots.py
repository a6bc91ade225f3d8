"""Trust roots for SEV-SNP: `TrustedRoot` (an AMD ASK + ARK pair), AMD's embedded pairs
(pinned by SHA-256), or a root file you trust.

The AMD files are the KDS `cert_chain` bodies for Milan and Genoa (the Genoa one is
byte-identical to the root Contrast embeds). Their DER SHA-256 digests are pinned here and
checked every time they are loaded, so a modified package file fails closed.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ._amd import amd_name_problems, verify_amd_signature
from ._errors import AttestationError, EvidenceError
from ._x509 import certificate_public_key, load_certificate, name_value, pem_blocks, pem_encode

__all__ = [
    "AMD_ROOT_PINS",
    "TrustedRoot",
    "amd_roots",
    "load_trusted_root",
    "parse_trusted_root",
]


@dataclass(frozen=True)
class TrustedRoot:
    """An ARK (self-signed root) and the ASK it signed, for one product line."""

    product_line: str
    ask: x509.Certificate
    ark: x509.Certificate
    source: str = ""

    @property
    def ask_der(self) -> bytes:
        return self.ask.public_bytes(serialization.Encoding.DER)

    @property
    def ark_der(self) -> bytes:
        return self.ark.public_bytes(serialization.Encoding.DER)

    def to_pem(self) -> bytes:
        """PEM ASK then ARK, like AMD KDS's cert_chain body."""
        return pem_encode("CERTIFICATE", self.ask_der) + pem_encode("CERTIFICATE", self.ark_der)

    def __repr__(self) -> str:
        return f"TrustedRoot(product_line={self.product_line!r}, source={self.source!r})"


def parse_trusted_root(pem_chain: bytes, *, source: str = "") -> TrustedRoot:
    """Parse an AMD KDS cert_chain body (PEM ASK, then PEM ARK, nothing else) and check it.

    Checks: both AMD-style names (CN ``SEV-<Line>`` / ``ARK-<Line>``), the ARK is self-signed,
    the ARK signs the ASK (RSA-PSS SHA-384, salt 48), the ASK is a CA.
    """
    blocks = pem_blocks(pem_chain)
    if len(blocks) != 2 or any(label != "CERTIFICATE" for label, _ in blocks):
        raise EvidenceError("a trusted root is two PEM CERTIFICATE blocks: ASK, then ARK")
    (_, ask_der), (_, ark_der) = blocks
    try:
        ask = load_certificate(ask_der)
    except EvidenceError as exc:
        raise EvidenceError(f"first certificate (ASK): {exc}") from None
    try:
        ark = load_certificate(ark_der)
    except EvidenceError as exc:
        raise EvidenceError(f"second certificate (ARK): {exc}") from None
    # Decoded here so that using the root later (chain checks, CRLs) cannot fail on them.
    ark_key = certificate_public_key(ark, "ARK")
    certificate_public_key(ask, "ASK")
    ark_cn = name_value(ark.subject, NameOID.COMMON_NAME)
    if len(ark_cn) != 1 or not ark_cn[0].startswith("ARK-"):
        raise EvidenceError(f"second certificate is not an ARK (CN {ark_cn})")
    line = ark_cn[0][len("ARK-") :]
    problems = amd_name_problems(ark.subject, f"ARK-{line}")
    if ark.issuer != ark.subject:
        problems.append("ARK is not self-issued")
    ask_cn = name_value(ask.subject, NameOID.COMMON_NAME)
    if ask_cn not in ([f"SEV-{line}"], [f"SEV-VLEK-{line}"]):
        problems.append(f"first certificate is not the ASK of {line} (CN {ask_cn})")
    if ask.issuer != ark.subject:
        problems.append("ASK is not issued by the ARK")
    try:
        constraints = ask.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not constraints.ca:
            problems.append("ASK is not a CA")
    except x509.ExtensionNotFound:
        problems.append("ASK has no basicConstraints")
    for what, cert in (("ARK", ark), ("ASK", ask)):
        try:
            verify_amd_signature(cert, ark_key)
        except EvidenceError as exc:
            problems.append(f"{what} signature by the ARK: {exc}")
    if problems:
        raise EvidenceError(f"invalid trusted root {source or line}: " + "; ".join(problems))
    return TrustedRoot(product_line=line, ask=ask, ark=ark, source=source)


#: product line -> (file, SHA-256 of the ARK DER, SHA-256 of the ASK DER).
AMD_ROOT_PINS: dict[str, tuple[str, str, str]] = {
    "Milan": (
        "ask_ark_milan.pem",
        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
        "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
    ),
    "Genoa": (
        "ask_ark_genoa.pem",
        "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
        "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
    ),
}


@functools.cache
def _amd_root(product_line: str) -> TrustedRoot:
    filename, ark_sha256, ask_sha256 = AMD_ROOT_PINS[product_line]
    data = resources.files(__package__).joinpath("amd_roots", filename).read_bytes()
    root = parse_trusted_root(data, source=f"AMD {product_line} (embedded)")
    actual_ark = hashlib.sha256(root.ark_der).hexdigest()
    actual_ask = hashlib.sha256(root.ask_der).hexdigest()
    if (actual_ark, actual_ask) != (ark_sha256, ask_sha256) or root.product_line != product_line:
        raise AttestationError.single(
            "TRUSTED_ROOT",
            f"TRUSTED_ROOT embedded AMD {product_line} root does not match its pin: "
            f"ARK sha256 {actual_ark} (want {ark_sha256}), ASK sha256 {actual_ask} "
            f"(want {ask_sha256})",
        )
    return root


def amd_roots() -> list[TrustedRoot]:
    """AMD's ASK/ARK for Milan and Genoa, the product lines Contrast accepts."""
    return [_amd_root(line) for line in AMD_ROOT_PINS]


def load_trusted_root(path: Path | str) -> list[TrustedRoot]:
    """Load a PEM file holding an ASK, then its ARK (like AMD's cert_chain, or the local
    backend's ``root.pem``); raises `AttestationError` if it is not a well-formed root."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AttestationError.single(
            "TRUSTED_ROOT", f"TRUSTED_ROOT cannot read {path}: {exc.strerror}"
        ) from None
    try:
        return [parse_trusted_root(data, source=str(path))]
    except EvidenceError as exc:
        raise AttestationError.single("TRUSTED_ROOT", f"TRUSTED_ROOT {path}: {exc}") from None
