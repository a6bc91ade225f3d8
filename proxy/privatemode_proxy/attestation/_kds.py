"""Where the verifier gets AMD certificates the evidence did not carry: VCEKs and CRLs.

The verifier does no I/O itself; it asks a `CertificateSource`. `KdsCertificateCache` fetches
from AMD's Key Distribution Service and keeps what it fetched on disk (KDS is rate-limited; VCEKs
never change, CRLs are re-fetched once their nextUpdate has passed).
`StaticCertificateSource` serves certificates given to it (offline use and tests).
Nothing a source returns is trusted: the verifier checks it against the trusted roots.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import httpx

from ._amd import KDS_BASE_URL, kds_crl_url, kds_extensions, kds_vcek_url
from ._errors import EvidenceError
from ._snp import TcbParts
from ._x509 import load_certificate, load_crl

__all__ = [
    "CertificateFetchError",
    "CertificateSource",
    "CertificateUnavailableError",
    "KdsCertificateCache",
    "StaticCertificateSource",
]


class CertificateUnavailableError(Exception):
    """A certificate or CRL could not be obtained (final: the source does not have it, or
    answered something that is not one)."""


class CertificateFetchError(CertificateUnavailableError):
    """Fetching a certificate or CRL failed in a way that may pass later: a connection error,
    a timeout, HTTP 429 or 5xx. The verifier reports it as a transient failure
    (`CollateralUnavailableError`)."""


@runtime_checkable
class CertificateSource(Protocol):
    """Supplies AMD certificates by what identifies them. Each method raises
    `CertificateUnavailableError` when it has nothing to give."""

    def vcek(self, product_line: str, chip_id: bytes, reported_tcb: TcbParts) -> bytes:
        """The DER VCEK of a chip at a TCB."""
        ...

    def crl(self, product_line: str) -> bytes:
        """The DER CRL of a product line's ARK."""
        ...


class StaticCertificateSource:
    """A `CertificateSource` over certificates held in memory (nothing is fetched)."""

    def __init__(
        self,
        *,
        vceks: Iterable[bytes] = (),
        crls: Mapping[str, bytes] | None = None,
    ) -> None:
        self._vceks = list(vceks)
        self._crls = dict(crls or {})

    def vcek(self, product_line: str, chip_id: bytes, reported_tcb: TcbParts) -> bytes:
        for der in self._vceks:
            try:
                ext = kds_extensions(load_certificate(der))
            except EvidenceError:
                continue
            if ext.hwid == chip_id and ext.tcb == reported_tcb and ext.product_line == product_line:
                return der
        raise CertificateUnavailableError(
            f"no VCEK for {product_line} chip {chip_id.hex()[:16]}... at TCB {reported_tcb}"
        )

    def crl(self, product_line: str) -> bytes:
        try:
            return self._crls[product_line]
        except KeyError:
            raise CertificateUnavailableError(f"no CRL for {product_line}") from None


_PRODUCT_LINE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,31}$")


def _check_product_line(product_line: str) -> str:
    # The product line becomes part of a URL and a file name: keep it to a plain word.
    if not _PRODUCT_LINE_RE.match(product_line):
        raise CertificateUnavailableError(f"invalid product line {product_line!r}")
    return product_line


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CachedCollateralFetcher:
    """What the AMD KDS and Intel PCS caches share: a directory of their own under the
    workspace, and a synchronous GET retried while its failure may pass.

    A connection error, a timeout, HTTP 429 or 5xx is retried (``attempts`` in all, waiting
    ``retry_delay`` times the attempt number between them) and, if it persists, raised as
    `CertificateFetchError`; any other status is final (`CertificateUnavailableError`).
    """

    _subdirectory: ClassVar[str]
    _default_base_url: ClassVar[str]

    def __init__(
        self,
        workspace: Path | str,
        *,
        base_url: str | None = None,
        client: httpx.Client | None = None,
        timeout: float = 30.0,
        attempts: int = 3,
        retry_delay: float = 2.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.directory = Path(workspace) / self._subdirectory
        self._base_url = (self._default_base_url if base_url is None else base_url).rstrip("/")
        self._client = client
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._retry_delay = retry_delay
        self._clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.directory)!r}, base_url={self._base_url!r})"

    def _get(self, url: str, what: str) -> httpx.Response:
        """The HTTP 200 answer to a GET of `url` (`what` names it in the log and errors)."""
        client = self._client or httpx.Client(timeout=self._timeout)
        try:
            last_problem = ""
            transient = True
            for attempt in range(self._attempts):
                if attempt:
                    time.sleep(self._retry_delay * attempt)
                try:
                    response = client.get(url, timeout=self._timeout)
                except httpx.HTTPError as exc:
                    last_problem = f"{type(exc).__name__}: {exc}"
                    continue
                if response.status_code == 200:
                    # Logged under the subclass's module, as each cache did on its own.
                    logging.getLogger(type(self).__module__).info("fetched %s from %s", what, url)
                    return response
                last_problem = f"HTTP {response.status_code}"
                if response.status_code not in (429, 500, 502, 503, 504):
                    transient = False
                    break
            error = CertificateFetchError if transient else CertificateUnavailableError
            raise error(f"could not fetch {what} from {url}: {last_problem}")
        finally:
            if self._client is None:
                client.close()


class KdsCertificateCache(CachedCollateralFetcher):
    """AMD KDS (`https://kdsintf.amd.com`) with an on-disk cache under ``<workspace>/kds``.

    Synchronous (the verifier runs off the event loop). Fetched content is parsed before it is
    cached, so garbage never lands on disk; a rate-limited or failing KDS is retried a few times
    (`CachedCollateralFetcher`).
    """

    _subdirectory = "kds"
    _default_base_url = KDS_BASE_URL

    # -- CertificateSource ----------------------------------------------------------------------

    def vcek(self, product_line: str, chip_id: bytes, reported_tcb: TcbParts) -> bytes:
        line = _check_product_line(product_line)
        if len(chip_id) != 64:
            raise CertificateUnavailableError(f"chip id is {len(chip_id)} bytes, expected 64")
        t = reported_tcb
        path = (
            self.directory
            / "vcek"
            / line
            / f"{chip_id.hex()}_bl{t.bl}_tee{t.tee}_snp{t.snp}_ucode{t.ucode}.der"
        )
        url = kds_vcek_url(line, chip_id, t, base_url=self._base_url)
        cached = self._read(path)
        if cached is not None:
            return cached
        return self._fetch_parsed(url, "VCEK", load_certificate, path, f"a bad VCEK for {url}")

    def crl(self, product_line: str) -> bytes:
        line = _check_product_line(product_line)
        path = self.directory / "crl" / f"{line}.der"
        cached = self._read(path)
        if cached is not None:
            try:
                next_update = load_crl(cached).next_update_utc
            except EvidenceError:
                next_update = None
            if next_update is not None and self._clock() < next_update:
                return cached
        url = kds_crl_url(line, base_url=self._base_url)
        return self._fetch_parsed(url, "CRL", load_crl, path, "a bad CRL")

    # -- helpers ----------------------------------------------------------------------------------

    def _fetch_parsed(
        self, url: str, what: str, parse: Callable[[bytes], object], path: Path, bad: str
    ) -> bytes:
        """Fetch `url` and keep it at `path` once `parse` accepts it (garbage never lands on
        disk; `bad` names the refusal: "KDS answered <bad>: <why>")."""
        data = self._get(url, what).content
        try:
            parse(data)
        except EvidenceError as exc:
            raise CertificateUnavailableError(f"KDS answered {bad}: {exc}") from None
        write_atomically(path, data)
        return data

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:
            return None
