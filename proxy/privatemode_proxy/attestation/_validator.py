"""The seam between the Contrast layer and one kind of TEE evidence.

`verify_attestation` (the Contrast and Privatemode layers) knows nothing about SEV-SNP or TDX. It
hands the evidence to each `TeeValidator` in turn (SEV-SNP, then Intel TDX, as Contrast orders its
validators); a validator tries every reference value of its TEE in the manifest and either
returns a `TeeVerification` (the first reference value that passed) or the failures of all of
them. Contrast's "any": the first validator that passes wins. A validator whose attestation type
differs from the response's is skipped, as Contrast drops "OID not supported".

`Checks` records failures while one reference value is tried; raising `Stop` (from
`Checks.stop`) ends that reference value when later checks would be meaningless.
`first_passing_reference` is the loop both validators run over their reference values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from ._errors import CheckFailure, EvidenceError
from ._manifest import Manifest

__all__ = [
    "Checks",
    "Stop",
    "TeeValidator",
    "TeeVerification",
    "describe",
    "first_passing_reference",
    "iso",
    "now_utc",
]

_Evidence = TypeVar("_Evidence")
_Reference = TypeVar("_Reference")
_Verified = TypeVar("_Verified")


@dataclass(frozen=True)
class TeeVerification:
    """What one TEE validator established about the evidence. Everything here is public."""

    tee: str
    """``AMD SEV-SNP`` or ``Intel TDX``."""
    reference_value: str
    """The manifest reference value that matched, e.g. ``snp[0] (Genoa)`` or ``tdx[1]``."""
    coordinator_policy: bytes
    """The 32 bytes the Coordinator check compares: HOST_DATA (SNP), MRCONFIGID[0:32] (TDX)."""
    product: str
    """The product line (``Genoa``) or platform (``TDX FMSPC 50806f000000``)."""
    measurement: str
    """The launch measurement (hex): MEASUREMENT (SNP) or MRTD (TDX)."""
    measurements: Mapping[str, str] = field(default_factory=dict)
    """Every measured value checked against the reference value, by name, as hex."""
    tcb: Mapping[str, int] = field(default_factory=dict)
    """The TCB the evidence reports (SNP: REPORTED_TCB parts; TDX: TEE_TCB_SVN and QE/PCE SVN)."""
    chip_id: str = ""
    trusted_root: str = ""


class TeeValidator(Protocol):
    """Verifies one kind of TEE evidence against the manifest's reference values for that TEE."""

    tee: str
    attestation_type: tuple[int, ...]

    def validate(
        self,
        manifest: Manifest,
        raw_attestation_doc: bytes,
        expected_report_data: bytes,
        now: datetime,
    ) -> tuple[TeeVerification | None, list[CheckFailure]]:
        """The first reference value of this TEE that the evidence passes, else (None, the
        failures of every reference value tried). A manifest without reference values for this
        TEE gives (None, [])."""
        ...


class Stop(Exception):
    """Stops checking one reference value (the failures are already recorded)."""


class Checks:
    """Failures recorded while checking one reference value (or the core report checks)."""

    def __init__(self, reference: str | None) -> None:
        self.reference = reference
        self.failures: list[CheckFailure] = []

    def fail(self, check: str, message: str, *, transient: bool = False) -> None:
        self.failures.append(CheckFailure(check, f"{check} {message}", self.reference, transient))

    def stop(self, check: str, message: str, *, transient: bool = False) -> Stop:
        self.fail(check, message, transient=transient)
        return Stop()


def first_passing_reference(
    tee: str,
    references: Sequence[_Reference],
    label: Callable[[int, _Reference], str],
    decode: Callable[[], _Evidence],
    check: Callable[[_Evidence, _Reference, Checks], _Verified | None],
    summarize: Callable[[_Verified, str], TeeVerification],
) -> tuple[TeeVerification | None, list[CheckFailure]]:
    """`TeeValidator.validate` over one TEE's reference values, in order.

    `decode` parses the evidence once (an `EvidenceError` fails every reference value as
    ``EVIDENCE``); `check` verifies it against one reference value, recording failures in its
    `Checks` (labelled by `label`) and raising `Stop` or returning None to end that value early.
    The first reference value whose check returns a verification and records no failure wins,
    summarized with its label; else (None, the failures of them all). No reference values:
    (None, []).
    """
    if not references:
        return None, []
    failures: list[CheckFailure] = []
    evidence: _Evidence | None = None
    decode_error = ""
    try:
        evidence = decode()
    except EvidenceError as exc:
        decode_error = str(exc)
    for index, reference in enumerate(references):
        reference_label = label(index, reference)
        checks = Checks(reference_label)
        if evidence is None:
            checks.fail("EVIDENCE", f"cannot decode the {tee} evidence: {decode_error}")
        else:
            try:
                verification = check(evidence, reference, checks)
            except Stop:
                verification = None
            if verification is not None and not checks.failures:
                return summarize(verification, reference_label), []
        failures.extend(checks.failures)
    return None, failures


def describe(failures: Sequence[CheckFailure]) -> str:
    """Failures grouped by reference value: ``snp[0] (Genoa): A ...; B ... | tdx[0]: C ...``."""
    groups: dict[str | None, list[str]] = {}
    for failure in failures:
        groups.setdefault(failure.reference, []).append(failure.message)
    return " | ".join(
        (f"{reference}: " if reference else "") + "; ".join(messages)
        for reference, messages in groups.items()
    )


def now_utc(now: datetime | None) -> datetime:
    """`now` as an aware UTC time (naive means UTC); None is the current time."""
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
