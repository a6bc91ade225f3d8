"""The attestation package's exceptions, and the record of one failed check.

Hierarchy::

    EvidenceError (ValueError)        bytes that do not parse as evidence, a certificate, ...
    └── ManifestError                 a manifest that does not decode or fails Validate()
    AttestationError (Exception)      the backend's evidence was not accepted (the verdict)
    └── CollateralUnavailableError    no verdict: collateral (a VCEK, CRL, TCB info...) could
                                      not be fetched; retrying later may succeed

The verifier only ever raises `AttestationError` (parsers raise `EvidenceError`, which the
verifier turns into a named failed check).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class EvidenceError(ValueError):
    """Evidence, a certificate, a manifest or a response that cannot be parsed or encoded."""


class ManifestError(EvidenceError):
    """A manifest that cannot be decoded or fails Contrast's `Manifest.Validate()`."""


@dataclass(frozen=True)
class CheckFailure:
    """One check that failed: its name (e.g. ``REPORTED_TCB``) and a message naming the values.

    ``reference`` says which manifest reference value was being tried (e.g. ``snp[0] (Genoa)``),
    or is ``None`` for checks that do not depend on one.
    """

    check: str
    message: str
    reference: str | None = None
    #: True when the check could not run because collateral could not be fetched (network,
    #: HTTP 5xx/429): the evidence was not found wanting, and a later attempt may pass.
    transient: bool = False

    def __str__(self) -> str:
        if self.reference is None:
            return self.message
        return f"{self.reference}: {self.message}"


class AttestationError(Exception):
    """The backend's evidence was not accepted.

    The message names each failed check and the values compared; ``failures`` holds the same
    information as data. Messages never contain secrets (evidence is public data).
    """

    def __init__(self, message: str, failures: Sequence[CheckFailure] = ()) -> None:
        super().__init__(message)
        self.failures: tuple[CheckFailure, ...] = tuple(failures)

    @classmethod
    def single(cls, check: str, message: str, reference: str | None = None) -> AttestationError:
        """An error for one failed check; ``message`` should start with the check's name."""
        failure = CheckFailure(check, message, reference)
        return cls(f"attestation failed: {failure}", [failure])

    @property
    def checks(self) -> frozenset[str]:
        """The names of the checks that failed."""
        return frozenset(f.check for f in self.failures)

    def checks_for(self, reference: str | None) -> frozenset[str]:
        """The names of the checks that failed while trying one reference value."""
        return frozenset(f.check for f in self.failures if f.reference == reference)


class CollateralUnavailableError(AttestationError):
    """No verdict could be reached because collateral could not be fetched (AMD KDS or Intel
    PCS unreachable, rate-limited or failing). Transient: retrying later may succeed.

    Raised instead of a plain `AttestationError` when at least one failed check is
    ``transient``; every other failure is final (a mismatch does not go away by retrying).
    """
