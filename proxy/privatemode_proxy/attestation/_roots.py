"""Trust roots: AMD's embedded ASK/ARK pairs (pinned by SHA-256), or a root file you trust.

The AMD files are the KDS `cert_chain` bodies for Milan and Genoa (the Genoa one is
byte-identical to the root Contrast embeds). Their DER SHA-256 digests are pinned here and
checked every time they are loaded, so a modified package file fails closed.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from pathlib import Path

from ._errors import AttestationError
from ._evidence import EvidenceError, TrustedRoot, parse_trusted_root

__all__ = ["AMD_ROOT_PINS", "TrustedRoot", "amd_roots", "load_trusted_root"]

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
