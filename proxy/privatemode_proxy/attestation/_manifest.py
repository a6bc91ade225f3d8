"""The expected manifest: a file the user pinned, or Privatemode's CDN with a local log.

The verifier requires the attested deployment to run exactly the expected manifest (byte
equality). When the manifest comes from the CDN, every manifest this source hands out is first
written to ``<workspace>/manifests/`` and recorded in ``log.jsonl`` there, so the user can audit
what was trusted and when; a manifest that differs from the last one logged is reported with a
warning naming both hashes - never accepted silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
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


@dataclass(frozen=True)
class ManifestLogEntry:
    time: str
    sha256: str
    url: str
    file: str
    previous_sha256: str | None


class ManifestSource:
    """Where the expected manifest comes from; use `pinned()` or `from_cdn()`."""

    def __init__(
        self,
        *,
        path: Path | None = None,
        cdn_url: str | None = None,
        workspace: Path | None = None,
        timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if (path is None) == (cdn_url is None):
            raise ValueError("give exactly one of a pinned manifest path or a CDN URL")
        if cdn_url is not None and workspace is None:
            raise ValueError("a CDN manifest source needs a workspace for its log")
        self.path = path
        self.cdn_url = cdn_url.rstrip("/") if cdn_url is not None else None
        self.workspace = workspace
        self._timeout = timeout
        self._clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def pinned(cls, path: Path | str) -> ManifestSource:
        """The manifest in a file (``--manifestPath``), read each time it is asked for."""
        return cls(path=Path(path).expanduser())

    @classmethod
    def from_cdn(
        cls, cdn_url: str | None, workspace: Path | str, *, timeout: float = 30.0
    ) -> ManifestSource:
        """``{cdn_url}/manifest.json`` (default Privatemode's CDN), logged under the workspace."""
        return cls(
            cdn_url=cdn_url or DEFAULT_CDN_URL,
            workspace=Path(workspace).expanduser(),
            timeout=timeout,
        )

    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.path else f"cdn_url={self.cdn_url!r}"
        return f"ManifestSource({where})"

    @property
    def manifest_url(self) -> str | None:
        return f"{self.cdn_url}/manifest.json" if self.cdn_url else None

    @property
    def log_directory(self) -> Path | None:
        return self.workspace / "manifests" if self.workspace is not None else None

    # -- getting the manifest ---------------------------------------------------------------

    async def get(self, client: httpx.AsyncClient | None = None) -> bytes:
        """The expected manifest bytes; raises `AttestationError` (check EXPECTED_MANIFEST)."""
        if self.path is not None:
            return self._read_pinned(self.path)
        url = self.manifest_url
        assert url is not None
        own_client = client is None
        http = client or httpx.AsyncClient(timeout=self._timeout)
        try:
            response = await http.get(url, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise self._error(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from None
        finally:
            if own_client:
                await http.aclose()
        return self._accept_fetched(url, response)

    def get_sync(self, client: httpx.Client | None = None) -> bytes:
        """Like `get`, for synchronous callers."""
        if self.path is not None:
            return self._read_pinned(self.path)
        url = self.manifest_url
        assert url is not None
        http = client or httpx.Client(timeout=self._timeout)
        try:
            response = http.get(url, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise self._error(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from None
        finally:
            if client is None:
                http.close()
        return self._accept_fetched(url, response)

    def provider(self) -> Callable[[httpx.AsyncClient], Awaitable[bytes]]:
        """An async function (client) -> manifest bytes, for the upstream session."""

        async def provide(client: httpx.AsyncClient) -> bytes:
            return await self.get(client)

        return provide

    # -- the log ----------------------------------------------------------------------------

    def log_entries(self) -> list[ManifestLogEntry]:
        """The manifests this source has handed out, oldest first."""
        directory = self.log_directory
        if directory is None:
            return []
        try:
            lines = (directory / "log.jsonl").read_text("utf-8").splitlines()
        except OSError:
            return []
        entries = []
        for line in lines:
            try:
                entries.append(ManifestLogEntry(**json.loads(line)))
            except (ValueError, TypeError):
                logger.warning("ignoring a malformed line in the manifest log")
        return entries

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _error(message: str) -> AttestationError:
        return AttestationError.single("EXPECTED_MANIFEST", f"EXPECTED_MANIFEST {message}")

    def _read_pinned(self, path: Path) -> bytes:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise self._error(f"cannot read pinned manifest {path}: {exc.strerror}") from None
        if not data:
            raise self._error(f"pinned manifest {path} is empty")
        return data

    def _accept_fetched(self, url: str, response: httpx.Response) -> bytes:
        if response.status_code != 200:
            raise self._error(f"{url} answered HTTP {response.status_code}")
        data = response.content
        if not data or len(data) > _MAX_MANIFEST_BYTES:
            raise self._error(f"{url} answered {len(data)} bytes, not a manifest")
        self._log(url, data)
        return data

    def _log(self, url: str, data: bytes) -> None:
        directory = self.log_directory
        assert directory is not None
        digest = hashlib.sha256(data).hexdigest()
        entries = self.log_entries()
        previous = entries[-1].sha256 if entries else None
        if previous == digest:
            return
        now = self._clock()
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            file = directory / f"{stamp}_{digest[:16]}.json"
            if not file.exists():
                tmp = file.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, file)
            entry = ManifestLogEntry(
                time=now.isoformat(),
                sha256=digest,
                url=url,
                file=file.name,
                previous_sha256=previous,
            )
            with (directory / "log.jsonl").open("a", encoding="utf-8") as log:
                log.write(json.dumps(entry.__dict__) + "\n")
        except OSError as exc:
            # A manifest that cannot be logged is not handed out.
            raise self._error(
                f"cannot log the manifest under {directory}: {exc.strerror}"
            ) from None
        if previous is None:
            logger.info("trusting manifest sha256 %s from %s (logged as %s)", digest, url, file)
        else:
            logger.warning(
                "the manifest at %s CHANGED: sha256 %s -> %s; the new one is logged as %s",
                url,
                previous,
                digest,
                file,
            )
