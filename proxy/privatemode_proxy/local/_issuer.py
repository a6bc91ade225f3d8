"""The local backend's identity: an AMD-like certificate chain and the evidence it signs.

No SEV-SNP hardware runs here, so the local backend plays both AMD and the firmware: on first
start it makes an ARK ("ARK-Genoa", RSA-4096, self-signed), an ASK ("SEV-Genoa") and a VCEK
(ECDSA P-384, "SEV-VCEK", KDS extensions with this identity's chip id and TCB), a CRL signed by
the ARK, a Contrast-style root CA and mesh CA, and a mesh certificate whose key signs secret
exchanges. They are kept in the workspace (RSA-4096 key generation is slow) together with
``root.pem`` (ASK then ARK, like AMD's cert_chain: the root a client must trust) and
``manifest.json`` (the manifest a client must pin).

Each attestation document is a Contrast `AttestationResponse` whose SEV-SNP report is built
exactly like a Coordinator's: report data bound to the nonce, the manifest history and the CAs;
HOST_DATA = the coordinator policy hash; ID_KEY_DIGEST derived from the measurement and policy;
MEASUREMENT = a digest of the backend's code and the model files. The verifier checks it with
the same code path as the real service; only the trusted root differs.

With ``tee="tdx"`` the evidence is an Intel TDX quote instead, from `_tdx_issuer`'s Intel-like
identity; the manifest then lists both TEEs' reference values (Contrast accepts either).
Over 600 lines on purpose: it is the server side of every attestation check, in one place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from privatemode_proxy.attestation._amd import (
    AMD_PSS_PADDING,
    OID_BL_SPL,
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
    amd_name,
)
from privatemode_proxy.attestation._contrast import (
    CONTRAST_FAMILY_ID,
    CONTRAST_IMAGE_ID,
    SNP_ATTESTATION_TYPE,
    TDX_ATTESTATION_TYPE,
    AttestationResponse,
    encode_attest_response,
    id_key_digest,
    report_data,
    transition_digest,
)
from privatemode_proxy.attestation._intel import IntelRoot, TdxCollateral
from privatemode_proxy.attestation._kds import CertificateUnavailableError
from privatemode_proxy.attestation._manifest import (
    COORDINATOR_ROLE,
    Manifest,
    MinimumTcb,
    PolicyEntry,
    SnpReferenceValues,
)
from privatemode_proxy.attestation._roots import (
    TrustedRoot,
    parse_trusted_root,
)
from privatemode_proxy.attestation._snp import (
    CRL_EXTRA_KEY,
    GENOA,
    GENOA_CPUID1EAX,
    SEV_PRODUCT_ENUM,
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    SIGNED_REPORT_SIZE,
    CertificateChain,
    GuestPolicy,
    PlatformInfo,
    SevProduct,
    SnpAttestation,
    SnpReport,
    TcbParts,
    encode_report_signature,
)
from privatemode_proxy.attestation._tdx import TdxQuote
from privatemode_proxy.attestation._x509 import (
    load_crl,
)
from privatemode_proxy.local._tdx_issuer import LocalTdxIdentity

__all__ = [
    "LOCAL_TCB",
    "LocalIdentity",
    "compute_measurement",
    "make_vcek_certificate",
    "vcek_certificate_builder",
]

logger = logging.getLogger(__name__)

IDENTITY_DIRNAME = "local-identity"
ROOT_PEM_NAME = "root.pem"
MANIFEST_NAME = "manifest.json"
TDX_ROOT_PEM_NAME = "tdx_root.pem"
_IDENTITY_VERSION = 1
_MEASUREMENT_DOMAIN = b"privatemode-integrations local backend measurement v1\x00"

#: The TCB the local "firmware" reports (Privatemode's current minimum: BL 10, TEE 0, SNP 28,
#: microcode 88); the manifest requires exactly this as its minimum.
LOCAL_TCB = TcbParts(bl=10, tee=0, snp=28, ucode=88)
#: Privatemode's guest policy {SMT, PageSwapDisable}, platform info and mitigation vector.
LOCAL_GUEST_POLICY = GuestPolicy(smt=True, page_swap_disable=True)
LOCAL_PLATFORM_INFO = PlatformInfo(ecc_enabled=True, alias_check_complete=True)
LOCAL_MITIGATION_VECTOR = 15
_FIRMWARE_VERSION = (1, 55, 43)  # major, minor, build
_VERSION_STRING = "privatemode-integrations-local-backend"
# A local URI: the verifier uses the CRL attached to the evidence, never fetches this one.
_LOCAL_CRL_URI = "urn:privatemode-integrations:local-backend:vcek:v1:Genoa:crl"

_CA_LIFETIME = timedelta(days=25 * 365)
_VCEK_LIFETIME = timedelta(days=7 * 365)
_LEAF_LIFETIME = timedelta(days=10 * 365)
_CRL_LIFETIME = timedelta(days=7)
_RENEW_BEFORE = timedelta(days=30)


# =============================================================================================
# Measurement
# =============================================================================================


def _code_files() -> list[tuple[str, Path]]:
    package = Path(__file__).resolve().parents[1]  # privatemode_proxy/
    return [
        (f"code/{path.relative_to(package).as_posix()}", path)
        for path in sorted(package.rglob("*.py"))
        if "__pycache__" not in path.parts
    ]


def _input_files(inputs: Iterable[Path]) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                out.append((f"input/{item.name}/{path.relative_to(item).as_posix()}", path))
        elif item.is_file():
            out.append((f"input/{item.name}", item))
        else:
            raise FileNotFoundError(f"measurement input {item} does not exist")
    return out


def compute_measurement(measurement_inputs: Sequence[Path] = ()) -> bytes:
    """SHA-384 over the backend's code (``privatemode_proxy/**/*.py``) and the given files or
    directories (the model): for each, its name, size and SHA-384, in a fixed order."""
    digest = hashlib.sha384(_MEASUREMENT_DOMAIN)
    for name, path in [*_code_files(), *_input_files(measurement_inputs)]:
        file_hash = hashlib.sha384()
        size = 0
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                file_hash.update(chunk)
                size += len(chunk)
        encoded = name.encode("utf-8")
        digest.update(struct.pack("<I", len(encoded)) + encoded + struct.pack("<Q", size))
        digest.update(file_hash.digest())
    return digest.digest()


# =============================================================================================
# Key material
# =============================================================================================


@dataclass(frozen=True)
class _Keys:
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    vcek_key: ec.EllipticCurvePrivateKey
    mesh_ca_key: ec.EllipticCurvePrivateKey
    mesh_key: ec.EllipticCurvePrivateKey
    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    root_ca: x509.Certificate
    mesh_ca: x509.Certificate
    mesh: x509.Certificate
    chip_id: bytes
    tcb: TcbParts
    report_id: bytes


def _der_integer(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(raw)]) + raw


def _der_ia5(text: str) -> bytes:
    raw = text.encode("ascii")
    return bytes([0x16, len(raw)]) + raw


def _kds_extension(oid: x509.ObjectIdentifier, value: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(oid, value)


def _amd_ca_builder(
    subject: str, issuer: str, public_key: rsa.RSAPublicKey, now: datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(amd_name(subject))
        .issuer_name(amd_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _CA_LIFETIME)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(_LOCAL_CRL_URI)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    )


def _ca_key_usage(*, crl_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _simple_name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def vcek_certificate_builder(
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    *,
    tcb: TcbParts,
    now: datetime,
    product_name: str = GENOA,
    lifetime: timedelta = _VCEK_LIFETIME,
) -> x509.CertificateBuilder:
    """A VCEK in AMD's form up to its chip's HWID and the ASK's signature: subject, validity,
    serial number 1, and the KDS extensions of the product and TCB."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(amd_name("SEV-VCEK"))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(1)  # AMD uses 0, which cryptography refuses to create
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + lifetime)
    )
    for oid, value in (
        (OID_STRUCT_VERSION, _der_integer(0)),
        (OID_PRODUCT_NAME, _der_ia5(product_name)),
        (OID_BL_SPL, _der_integer(tcb.bl)),
        (OID_TEE_SPL, _der_integer(tcb.tee)),
        (OID_SPL4, _der_integer(tcb.spl4)),
        (OID_SPL5, _der_integer(tcb.spl5)),
        (OID_SPL6, _der_integer(tcb.spl6)),
        (OID_SPL7, _der_integer(tcb.spl7)),
        (OID_SNP_SPL, _der_integer(tcb.snp)),
        (OID_UCODE_SPL, _der_integer(tcb.ucode)),
    ):
        builder = builder.add_extension(_kds_extension(oid, value), critical=False)
    return builder


def make_vcek_certificate(
    ask_key: rsa.RSAPrivateKey,
    ask: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    *,
    chip_id: bytes,
    tcb: TcbParts,
    now: datetime,
    product_name: str = GENOA,
    lifetime: timedelta = _VCEK_LIFETIME,
) -> x509.Certificate:
    """A VCEK in AMD's form (subject, KDS extensions, RSA-PSS by the ASK), serial number 1."""
    builder = vcek_certificate_builder(
        ask.subject, public_key, tcb=tcb, now=now, product_name=product_name, lifetime=lifetime
    )
    # The HWID last, raw bytes with no DER tag, as AMD's KDS does.
    builder = builder.add_extension(_kds_extension(OID_HWID, chip_id), critical=False)
    return builder.sign(ask_key, hashes.SHA384(), rsa_padding=AMD_PSS_PADDING)


def _generate_keys(now: datetime) -> _Keys:
    line = GENOA
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    ark = (
        _amd_ca_builder(f"ARK-{line}", f"ARK-{line}", ark_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(crl_sign=True), critical=True)
        .sign(ark_key, hashes.SHA384(), rsa_padding=AMD_PSS_PADDING)
    )
    ask = (
        _amd_ca_builder(f"SEV-{line}", f"ARK-{line}", ask_key.public_key(), now)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ark_key.public_key()),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(crl_sign=False), critical=True)
        .sign(ark_key, hashes.SHA384(), rsa_padding=AMD_PSS_PADDING)
    )

    chip_id = secrets.token_bytes(64)
    tcb = LOCAL_TCB
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    vcek = make_vcek_certificate(
        ask_key, ask, vcek_key.public_key(), chip_id=chip_id, tcb=tcb, now=now
    )

    # Contrast-style CAs: the root CA is bound into the report data; the mesh CA is the trust
    # anchor for the mesh certificate that signs secret exchanges.
    root_ca_key = ec.generate_private_key(ec.SECP384R1())
    mesh_ca_key = ec.generate_private_key(ec.SECP384R1())
    mesh_key = ec.generate_private_key(ec.SECP256R1())
    root_ca = _self_signed_ca(root_ca_key, "system:coordinator:root", now)
    mesh_ca = _self_signed_ca(mesh_ca_key, "system:coordinator:intermediate", now)
    mesh = (
        x509.CertificateBuilder()
        .subject_name(_simple_name("coordinator"))
        .issuer_name(mesh_ca.subject)
        .public_key(mesh_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("coordinator"), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(mesh_ca_key.public_key()),
            critical=False,
        )
        .sign(mesh_ca_key, hashes.SHA384())
    )
    return _Keys(
        ark_key=ark_key,
        ask_key=ask_key,
        vcek_key=vcek_key,
        mesh_ca_key=mesh_ca_key,
        mesh_key=mesh_key,
        ark=ark,
        ask=ask,
        vcek=vcek,
        root_ca=root_ca,
        mesh_ca=mesh_ca,
        mesh=mesh,
        chip_id=chip_id,
        tcb=tcb,
        report_id=secrets.token_bytes(32),
    )


def _self_signed_ca(key: ec.EllipticCurvePrivateKey, name: str, now: datetime) -> x509.Certificate:
    subject = _simple_name(name)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )


def _make_crl(keys_ark: x509.Certificate, ark_key: rsa.RSAPrivateKey, now: datetime) -> bytes:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(keys_ark.subject)
        .last_update(now - timedelta(hours=1))
        .next_update(now + _CRL_LIFETIME)
        .sign(ark_key, hashes.SHA384(), rsa_padding=AMD_PSS_PADDING)
    )
    return crl.public_bytes(serialization.Encoding.DER)


def _key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _store_keys(directory: Path, keys: _Keys, now: datetime) -> None:
    directory.mkdir(mode=0o700)
    private: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] = {
        "ark.key.pem": keys.ark_key,
        "ask.key.pem": keys.ask_key,
        "vcek.key.pem": keys.vcek_key,
        "mesh_ca.key.pem": keys.mesh_ca_key,
        "mesh.key.pem": keys.mesh_key,
    }
    for name, key in private.items():
        _write_private(directory / name, _key_pem(key))
    public = {
        "ark.pem": keys.ark,
        "ask.pem": keys.ask,
        "vcek.pem": keys.vcek,
        "root_ca.pem": keys.root_ca,
        "mesh_ca.pem": keys.mesh_ca,
        "mesh.pem": keys.mesh,
    }
    for name, cert in public.items():
        (directory / name).write_bytes(_cert_pem(cert))
    identity = {
        "version": _IDENTITY_VERSION,
        "product_line": GENOA,
        "chip_id": keys.chip_id.hex(),
        "report_id": keys.report_id.hex(),
        "tcb": keys.tcb.as_dict(),
        "created": now.isoformat(),
    }
    (directory / "identity.json").write_text(json.dumps(identity, indent=2) + "\n", "utf-8")


def _load_keys(directory: Path) -> _Keys:
    identity = json.loads((directory / "identity.json").read_text("utf-8"))
    if identity.get("version") != _IDENTITY_VERSION:
        raise ValueError(f"identity version {identity.get('version')!r} is not supported")

    def private(name: str) -> object:
        # Our own files: skip cryptography's slow RSA consistency check on every start.
        return serialization.load_pem_private_key(
            (directory / name).read_bytes(), password=None, unsafe_skip_rsa_key_validation=True
        )

    def cert(name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((directory / name).read_bytes())

    ark_key, ask_key = private("ark.key.pem"), private("ask.key.pem")
    vcek_key, mesh_ca_key, mesh_key = (
        private("vcek.key.pem"),
        private("mesh_ca.key.pem"),
        private("mesh.key.pem"),
    )
    if not (
        isinstance(ark_key, rsa.RSAPrivateKey)
        and isinstance(ask_key, rsa.RSAPrivateKey)
        and isinstance(vcek_key, ec.EllipticCurvePrivateKey)
        and isinstance(mesh_ca_key, ec.EllipticCurvePrivateKey)
        and isinstance(mesh_key, ec.EllipticCurvePrivateKey)
    ):
        raise ValueError("a stored key has the wrong type")
    chip_id = bytes.fromhex(identity["chip_id"])
    report_id = bytes.fromhex(identity["report_id"])
    if len(chip_id) != 64 or len(report_id) != 32:
        raise ValueError("stored chip id or report id has the wrong length")
    return _Keys(
        ark_key=ark_key,
        ask_key=ask_key,
        vcek_key=vcek_key,
        mesh_ca_key=mesh_ca_key,
        mesh_key=mesh_key,
        ark=cert("ark.pem"),
        ask=cert("ask.pem"),
        vcek=cert("vcek.pem"),
        root_ca=cert("root_ca.pem"),
        mesh_ca=cert("mesh_ca.pem"),
        mesh=cert("mesh.pem"),
        chip_id=chip_id,
        tcb=TcbParts(**{k: int(v) for k, v in identity["tcb"].items()}),
        report_id=report_id,
    )


def _keys_usable(keys: _Keys, now: datetime) -> str | None:
    """Why stored keys cannot be used (None if they can)."""
    for name, cert in (
        ("ARK", keys.ark),
        ("ASK", keys.ask),
        ("VCEK", keys.vcek),
        ("root CA", keys.root_ca),
        ("mesh CA", keys.mesh_ca),
        ("mesh certificate", keys.mesh),
    ):
        if cert.not_valid_after_utc < now + _RENEW_BEFORE:
            return f"the {name} expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    if keys.vcek.public_key() != keys.vcek_key.public_key():
        return "the VCEK does not match its key"
    if keys.mesh.public_key() != keys.mesh_key.public_key():
        return "the mesh certificate does not match its key"
    return None


# =============================================================================================
# The identity
# =============================================================================================


class LocalIdentity:
    """The local backend's keys, certificates and manifest; makes attestation documents."""

    def __init__(
        self,
        workspace: Path,
        keys: _Keys,
        measurement: bytes,
        *,
        now: datetime | None = None,
        tdx: LocalTdxIdentity | None = None,
    ) -> None:
        self.workspace = workspace
        self.tdx = tdx
        self.tee = "tdx" if tdx is not None else "snp"
        self._tdx_collateral: TdxCollateral | None = None
        self._keys = keys
        self.measurement = measurement
        self._lock = threading.Lock()
        self._crl_der = b""
        self._crl_next_update = datetime.min.replace(tzinfo=UTC)
        self._tdx_collateral_expiry = datetime.min.replace(tzinfo=UTC)

        self._root_ca_pem = _cert_pem(keys.root_ca)
        self._mesh_ca_pem = _cert_pem(keys.mesh_ca)
        self._mesh_cert_der = keys.mesh.public_bytes(serialization.Encoding.DER)
        self._vcek_der = keys.vcek.public_bytes(serialization.Encoding.DER)
        self._ask_der = keys.ask.public_bytes(serialization.Encoding.DER)
        self._ark_der = keys.ark.public_bytes(serialization.Encoding.DER)
        self._trusted_root = parse_trusted_root(
            _cert_pem(keys.ask) + _cert_pem(keys.ark), source=str(self.root_pem_path)
        )

        self.guest_policy = LOCAL_GUEST_POLICY.to_int()
        self.policy = (
            b"# privatemode-integrations local backend: coordinator policy\n"
            b"role: coordinator\n"
            b"measurement: " + measurement.hex().encode("ascii") + b"\n"
        )
        self.host_data = hashlib.sha256(self.policy).digest()
        self._id_key_digest = id_key_digest(measurement, self.guest_policy)
        self.manifest = Manifest(
            policies={
                self.host_data.hex(): PolicyEntry(
                    sans=("coordinator",),
                    workload_secret_id="coordinator",  # noqa: S106 - an ID, not a secret
                    role=COORDINATOR_ROLE,
                )
            },
            snp=(
                SnpReferenceValues(
                    product_name=GENOA,
                    trusted_measurement=measurement.hex(),
                    minimum_tcb=MinimumTcb(
                        bootloader_version=keys.tcb.bl,
                        tee_version=keys.tcb.tee,
                        snp_version=keys.tcb.snp,
                        microcode_version=keys.tcb.ucode,
                    ),
                    guest_policy=LOCAL_GUEST_POLICY,
                    platform_info=LOCAL_PLATFORM_INFO,
                    minimum_mitigation_vector=LOCAL_MITIGATION_VECTOR,
                    # Upper case, as in Privatemode's manifests: verifiers compare bytes.
                    allowed_chip_ids=(keys.chip_id.hex().upper(),),
                ),
            ),
            # With TDX evidence the manifest lists both TEEs: Contrast accepts either ("any").
            tdx=(tdx.reference_values(measurement),) if tdx is not None else (),
        )
        # TDX: MRCONFIGID[0:32] carries the coordinator policy hash (HOST_DATA on SNP).
        self.mr_config_id = self.host_data + bytes(16)
        self._manifest_bytes = self.manifest.to_json()
        self._transition = transition_digest([self._manifest_bytes])
        self._refresh_crl(now or datetime.now(UTC))

    def __repr__(self) -> str:
        return (
            f"LocalIdentity(workspace={str(self.workspace)!r}, "
            f"measurement={self.measurement.hex()[:16]}...)"
        )

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def load_or_create(
        cls,
        workspace: Path | str,
        *,
        measurement_inputs: Sequence[Path] = (),
        now: datetime | None = None,
        tee: str = "snp",
    ) -> LocalIdentity:
        """Load the identity kept in `workspace`, or make one (slow: two RSA-4096 keys).

        Writes ``root.pem`` and ``manifest.json`` into `workspace`. The measurement (and so the
        manifest) is recomputed from the code and `measurement_inputs` every time.
        `tee`: ``snp`` (SEV-SNP evidence) or ``tdx`` (Intel TDX evidence from an Intel-like test
        root kept beside the AMD-like one; ``tdx_root.pem`` is written too).
        """
        if tee not in ("snp", "tdx"):
            raise ValueError(f"tee must be 'snp' or 'tdx', not {tee!r}")
        workspace = Path(workspace).expanduser()
        workspace.mkdir(parents=True, exist_ok=True)
        now = now or datetime.now(UTC)
        directory = workspace / IDENTITY_DIRNAME
        keys: _Keys | None = None
        if directory.exists():
            try:
                keys = _load_keys(directory)
                problem = _keys_usable(keys, now)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                problem = f"it cannot be loaded ({type(exc).__name__}: {exc})"
            if problem is not None:
                logger.warning("replacing the local identity in %s: %s", directory, problem)
                stale = directory.with_name(f"{IDENTITY_DIRNAME}.stale-{secrets.token_hex(4)}")
                os.replace(directory, stale)
                shutil.rmtree(stale, ignore_errors=True)
                keys = None
        if keys is None:
            keys = cls._create(directory, now)
        tdx = LocalTdxIdentity.load_or_create(directory / "tdx", now) if tee == "tdx" else None
        identity = cls(workspace, keys, compute_measurement(measurement_inputs), now=now, tdx=tdx)
        identity._write_public_files()
        return identity

    @staticmethod
    def _create(directory: Path, now: datetime) -> _Keys:
        logger.info("creating the local backend identity in %s (RSA-4096 keys)", directory)
        keys = _generate_keys(now)
        staging = directory.with_name(f"{IDENTITY_DIRNAME}.new-{secrets.token_hex(4)}")
        _store_keys(staging, keys, now)
        try:
            os.rename(staging, directory)
        except OSError:
            # Another process made one at the same time: use theirs, so both agree.
            shutil.rmtree(staging, ignore_errors=True)
            return _load_keys(directory)
        return keys

    def _write_public_files(self) -> None:
        files = [
            (self.root_pem_path, self._trusted_root.to_pem()),
            (self.manifest_path, self._manifest_bytes),
        ]
        if self.tdx is not None:
            files.append((self.tdx_root_pem_path, self.tdx.root_pem()))
        for path, data in files:
            try:
                if path.read_bytes() == data:
                    continue
            except OSError:
                pass
            _write_replace(path, data)

    # -- what clients need --------------------------------------------------------------------

    @property
    def root_pem_path(self) -> Path:
        """``root.pem``: the ASK then the ARK, the root a client trusts for local mode."""
        return self.workspace / ROOT_PEM_NAME

    @property
    def manifest_path(self) -> Path:
        """``manifest.json``: the manifest a client pins."""
        return self.workspace / MANIFEST_NAME

    @property
    def manifest_bytes(self) -> bytes:
        return self._manifest_bytes

    def trusted_root(self) -> TrustedRoot:
        return self._trusted_root

    @property
    def tdx_root_pem_path(self) -> Path:
        """``tdx_root.pem``: the Intel-like test root a client trusts for local TDX evidence."""
        return self.workspace / TDX_ROOT_PEM_NAME

    def tdx_session_options(self) -> dict[str, Any]:
        """What a proxy's `SessionConfig` needs to accept this identity's TDX evidence: its
        Intel-like root (instead of Intel's) and its collateral. Empty for SEV-SNP."""
        if self.tdx is None:
            return {}
        return {"tdx_roots": (self.tdx_trusted_root(),), "tdx_collateral": self}

    def tdx_trusted_root(self) -> IntelRoot:
        if self.tdx is None:
            raise ValueError("this local identity issues SEV-SNP evidence, not TDX")
        return self.tdx.trusted_root()

    def tdx_collateral(
        self, fmspc: bytes = b"", ca: str = "", evaluation_data_number: int = 0
    ) -> TdxCollateral:
        """The local Intel-like PCS collateral (a `TdxCollateralSource`; renewed near expiry)."""
        if self.tdx is None:
            raise CertificateUnavailableError("this local identity has no TDX collateral")
        now = datetime.now(UTC)
        with self._lock:
            current = self._tdx_collateral
            if current is None or now + timedelta(days=1) >= self._tdx_collateral_expiry:
                current = self._tdx_collateral = self.tdx.collateral(now)
                self._tdx_collateral_expiry = now + timedelta(days=29)
            return current

    @property
    def chip_id(self) -> bytes:
        return self._keys.chip_id

    @property
    def tcb(self) -> TcbParts:
        return self._keys.tcb

    @property
    def vcek_der(self) -> bytes:
        return self._vcek_der

    # -- the service side ---------------------------------------------------------------------

    @property
    def mesh_key(self) -> ec.EllipticCurvePrivateKey:
        """The key of the mesh certificate; signs secret exchanges."""
        return self._keys.mesh_key

    @property
    def mesh_cert_der(self) -> bytes:
        return self._mesh_cert_der

    @property
    def mesh_ca(self) -> x509.Certificate:
        return self._keys.mesh_ca

    @property
    def mesh_ca_pem(self) -> bytes:
        return self._mesh_ca_pem

    def crl_der(self, now: datetime | None = None) -> bytes:
        """The current ARK-signed CRL (renewed when it nears its nextUpdate)."""
        return self._refresh_crl(now or datetime.now(UTC))

    def _refresh_crl(self, now: datetime) -> bytes:
        with self._lock:
            if now + timedelta(days=1) >= self._crl_next_update:
                self._crl_der = _make_crl(self._keys.ark, self._keys.ark_key, now)
                next_update = load_crl(self._crl_der).next_update_utc
                assert next_update is not None
                self._crl_next_update = next_update
            return self._crl_der

    def report(self, nonce: bytes) -> SnpReport:
        """A signed SEV-SNP report for `nonce` (32 bytes), as a Contrast Coordinator's."""
        if not isinstance(nonce, bytes) or len(nonce) != 32:
            raise ValueError("the nonce must be 32 bytes")
        tcb = self._keys.tcb.to_int()
        major, minor, build = _FIRMWARE_VERSION
        unsigned = SnpReport(
            version=5,
            guest_svn=2,  # the ID block's guest SVN
            policy=self.guest_policy,
            family_id=CONTRAST_FAMILY_ID,
            image_id=CONTRAST_IMAGE_ID,
            vmpl=0,
            signature_algo=SIGNATURE_ALGO_ECDSA_P384_SHA384,
            current_tcb=tcb,
            platform_info=LOCAL_PLATFORM_INFO.to_int(),
            signer_info=0,  # VCEK, chip id not masked, no author key
            report_data=report_data(nonce, self._transition, self._root_ca_pem, self._mesh_ca_pem),
            measurement=self.measurement,
            host_data=self.host_data,
            id_key_digest=self._id_key_digest,
            author_key_digest=bytes(48),
            report_id=self._keys.report_id,
            report_id_ma=b"\xff" * 32,
            reported_tcb=tcb,
            chip_id=self._keys.chip_id,
            committed_tcb=tcb,
            current_build=build,
            current_minor=minor,
            current_major=major,
            committed_build=build,
            committed_minor=minor,
            committed_major=major,
            launch_tcb=tcb,
            signature=bytes(512),
            cpuid1eax_fms=GENOA_CPUID1EAX,
            launch_mit_vector=LOCAL_MITIGATION_VECTOR,
            current_mit_vector=LOCAL_MITIGATION_VECTOR,
        )
        signed = unsigned.to_abi_bytes()[:SIGNED_REPORT_SIZE]
        der_signature = self._keys.vcek_key.sign(signed, ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der_signature)
        return unsigned.replace(signature=encode_report_signature(r, s))

    def attestation_doc(self, nonce: bytes) -> bytes:
        """The Contrast `AttestationResponse` JSON for `nonce` (what Privatemode wraps)."""
        if self.tdx is not None:
            return self._attestation_doc(self.tdx_quote(nonce).to_proto(), TDX_ATTESTATION_TYPE)
        evidence = SnpAttestation(
            report=self.report(nonce),
            certificate_chain=CertificateChain(
                vcek_cert=self._vcek_der,
                ask_cert=self._ask_der,
                ark_cert=self._ark_der,
                extras={CRL_EXTRA_KEY: self.crl_der()},
            ),
            product=SevProduct(name=SEV_PRODUCT_ENUM[GENOA], machine_stepping=0),
        )
        return self._attestation_doc(evidence.to_proto(), SNP_ATTESTATION_TYPE)

    def _attestation_doc(self, evidence: bytes, attestation_type: tuple[int, ...]) -> bytes:
        return AttestationResponse(
            version=_VERSION_STRING,
            raw_attestation_doc=evidence,
            attestation_type=attestation_type,
            manifests=(self._manifest_bytes,),
            policies=(self.policy,),
            root_ca=self._root_ca_pem,
            mesh_ca=self._mesh_ca_pem,
        ).to_json()

    def tdx_quote(self, nonce: bytes) -> TdxQuote:
        """A signed TDX quote v4 for `nonce`, as a Contrast Coordinator on TDX makes one."""
        if self.tdx is None:
            raise ValueError("this local identity issues SEV-SNP evidence, not TDX")
        if not isinstance(nonce, bytes) or len(nonce) != 32:
            raise ValueError("the nonce must be 32 bytes")
        return self.tdx.quote(
            measurement=self.measurement,
            mr_config_id=self.mr_config_id,
            report_data=report_data(nonce, self._transition, self._root_ca_pem, self._mesh_ca_pem),
        )

    def privatemode_attest_response(self, nonce: bytes) -> bytes:
        """The `/privatemode/v1/attest` response body: ``{"AttestationDoc": <base64>}``."""
        return encode_attest_response(self.attestation_doc(nonce))
