"""The expected manifest from Privatemode's CDN, with the official manifest log.

The verifier requires the attested deployment to run exactly the expected manifest (byte
equality). This source fetches ``{cdn}/manifest.json?t=<unix ms>`` (cache busting, as the
official proxy does) and, before handing a manifest out, records it in the layout Privatemode's
docs tell users to audit:

    <workspace>/manifests/log.txt     one line "<RFC 3339 time> <path>" per fetch
    <workspace>/manifests/<N>.json    each distinct manifest, N counting up from 1

A manifest that differs from the last one logged is reported with a warning naming both hashes,
never accepted silently. An existing log is extended, never rewritten: the official proxy's
lines are kept as they are, and our earlier layout (``log.jsonl`` with time-stamped files) is
carried over once into ``log.txt`` (``log.jsonl`` is then renamed, not deleted).
(A pinned ``--manifestPath`` needs none of this: the CLI reads that file itself.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from ._errors import AttestationError

__all__ = ["DEFAULT_CDN_URL", "ManifestLogEntry", "ManifestSource"]

logger = logging.getLogger(__name__)

DEFAULT_CDN_URL = "https://cdn.confidential.cloud/privatemode/v2"
_MAX_MANIFEST_BYTES = 4 << 20
_NUMBERED = re.compile(r"^([0-9]+)\.json$")


@dataclass(frozen=True)
class ManifestLogEntry:
    """One line of ``log.txt``: when a manifest was fetched and the file that holds it."""

    time: str
    path: Path
    sha256: str | None
    """SHA-256 of the file's bytes, or None if the file is missing or unreadable."""


class ManifestSource:
    """``{cdn_url}/manifest.json`` (default Privatemode's CDN), logged under the workspace."""

    def __init__(
        self,
        cdn_url: str | None,
        workspace: Path | str,
        *,
        timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.cdn_url = (cdn_url or DEFAULT_CDN_URL).rstrip("/")
        self.workspace = Path(workspace).expanduser()
        self._timeout = timeout
        self._clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def from_cdn(
        cls, cdn_url: str | None, workspace: Path | str, *, timeout: float = 30.0
    ) -> ManifestSource:
        return cls(cdn_url, workspace, timeout=timeout)

    def __repr__(self) -> str:
        return f"ManifestSource(cdn_url={self.cdn_url!r}, workspace={str(self.workspace)!r})"

    @property
    def manifest_url(self) -> str:
        """The manifest's URL, without the cache-busting query."""
        return f"{self.cdn_url}/manifest.json"

    @property
    def log_directory(self) -> Path:
        return self.workspace / "manifests"

    # -- getting the manifest ---------------------------------------------------------------

    async def get(self, client: httpx.AsyncClient | None = None) -> bytes:
        """The expected manifest bytes; raises `AttestationError` (check EXPECTED_MANIFEST)."""
        url = self.manifest_url
        params = {"t": str(int(self._clock().timestamp() * 1000))}
        own_client = client is None
        http = client or httpx.AsyncClient(timeout=self._timeout)
        try:
            response = await http.get(url, params=params, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise self._error(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from None
        finally:
            if own_client:
                await http.aclose()
        if response.status_code != 200:
            raise self._error(f"{url} answered HTTP {response.status_code}")
        data = response.content
        if not data or len(data) > _MAX_MANIFEST_BYTES:
            raise self._error(f"{url} answered {len(data)} bytes, not a manifest")
        self._log(url, data)
        return data

    def provider(self) -> Callable[[httpx.AsyncClient], Awaitable[bytes]]:
        """An async function (client) -> manifest bytes, for the upstream session."""

        async def provide(client: httpx.AsyncClient) -> bytes:
            return await self.get(client)

        return provide

    # -- the log ----------------------------------------------------------------------------

    def log_entries(self) -> list[ManifestLogEntry]:
        """Every fetch in ``log.txt``, oldest first (after carrying over an old ``log.jsonl``)."""
        self._migrate_jsonl()
        return self._read_log()

    def _read_log(self) -> list[ManifestLogEntry]:
        try:
            lines = (self.log_directory / "log.txt").read_text("utf-8").splitlines()
        except OSError:
            return []
        entries = []
        for line in lines:
            stamp, _, name = line.strip().partition(" ")
            if not stamp or not name:
                if line.strip():
                    logger.warning("ignoring a malformed line in the manifest log")
                continue
            path = Path(name)
            if not path.is_absolute():
                path = self.log_directory / path
            entries.append(ManifestLogEntry(time=stamp, path=path, sha256=_sha256_of(path)))
        return entries

    def _migrate_jsonl(self) -> None:
        """Carry our earlier ``log.jsonl`` layout over into ``log.txt`` and numbered files."""
        old = self.log_directory / "log.jsonl"
        if not old.exists():
            return
        try:
            lines = old.read_text("utf-8").splitlines()
            for line in lines:
                try:
                    record = json.loads(line)
                    stamp, file = str(record["time"]), str(record["file"])
                    data = (self.log_directory / file).read_bytes()
                except (ValueError, TypeError, KeyError, OSError):
                    logger.warning("manifest log: cannot carry over the line %r", line[:200])
                    continue
                self._append(stamp, self._store(data))
            os.replace(old, old.with_name("log.jsonl.migrated"))
        except OSError as exc:
            raise self._error(f"cannot carry over the manifest log {old}: {exc.strerror}") from None

    def _store(self, data: bytes) -> Path:
        """The numbered file holding `data`: the latest one if equal, else a new ``<N>.json``."""
        directory = self.log_directory
        directory.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for p in directory.iterdir() if (m := _NUMBERED.match(p.name))]
        if numbers:
            latest = directory / f"{max(numbers)}.json"
            if _sha256_of(latest) == hashlib.sha256(data).hexdigest():
                return latest
        path = directory / f"{max(numbers, default=0) + 1}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path

    def _append(self, stamp: str, path: Path) -> None:
        with (self.log_directory / "log.txt").open("a", encoding="utf-8") as log:
            log.write(f"{stamp} {path}\n")

    def _log(self, url: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        try:
            entries = self.log_entries()
            previous = entries[-1].sha256 if entries else None
            path = self._store(data)
            self._append(_rfc3339(self._clock()), path)
        except OSError as exc:
            # A manifest that cannot be logged is not handed out.
            raise self._error(
                f"cannot log the manifest under {self.log_directory}: {exc.strerror}"
            ) from None
        if previous is None:
            logger.info("trusting manifest sha256 %s from %s (logged as %s)", digest, url, path)
        elif previous != digest:
            logger.warning(
                "the manifest at %s CHANGED: sha256 %s -> %s; the new one is logged as %s",
                url,
                previous,
                digest,
                path,
            )

    @staticmethod
    def _error(message: str) -> AttestationError:
        return AttestationError.single("EXPECTED_MANIFEST", f"EXPECTED_MANIFEST {message}")


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
