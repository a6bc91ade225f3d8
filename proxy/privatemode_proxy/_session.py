"""The upstream session: attestation, the secret and its lifetime, and the protocol's retries.

One `UpstreamSession` per proxy. It attests the Privatemode API (or the local backend), checks
the manifest, takes the mesh CA, exchanges a secret over HPKE, and keeps that secret fresh in the
background so that requests never wait for an exchange unless there is no usable secret at all.
No request body leaves before a verified secret exists. See the protocol notes, §1-§5.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import platform
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from privatemode_proxy import __version__
from privatemode_proxy._openai_errors import error_body
from privatemode_proxy.attestation import (
    AttestationError,
    AttestationResult,
    CertificateSource,
    TrustedRoot,
    verify_attestation,
)
from privatemode_proxy.protocol import (
    ClientSecretExchange,
    FieldCipherError,
    RequestCipher,
    Secret,
    SecretExchangeError,
    nvidia_ocsp_policy_headers,
)

logger = logging.getLogger(__name__)

PRIVATEMODE_CLIENT_VERSION = "v1.40.0"
"""The official proxy version whose protocol this proxy speaks (sent as `Privatemode-Version`).

From v1.40 the API reads the client's request id from `Privatemode-User-Request-ID`."""

NO_SECRET_FOR_ID = b"no secret for ID"
ATTEST_PATH = "/privatemode/v1/attest"
SECRET_PATH = "/privatemode/v1/secret"  # noqa: S105 - a URL path
EMBEDDINGS_PATH = "/v1/embeddings"
MODELS_PATH = "/v1/models"

MAX_MODEL_NAME_LENGTH = 256


def model_name_problem(model: str) -> str | None:
    """Why `model` cannot be sent as the `Privatemode-Target-Model` header value, or None.

    A model id is visible ASCII (no spaces or control characters): anything else is not a valid
    header value, or could split the header.
    """
    if not model:
        return "'model' must not be empty"
    if len(model) > MAX_MODEL_NAME_LENGTH:
        return f"'model' is {len(model)} characters long; at most {MAX_MODEL_NAME_LENGTH} allowed"
    for i, char in enumerate(model):
        if not "!" <= char <= "~":
            return (
                f"'model' may contain only visible ASCII characters (no spaces, control or "
                f"non-ASCII characters); character {i} is {char!r}"
            )
    return None


ManifestProvider = Callable[[httpx.AsyncClient], Awaitable[bytes]]
"""Returns the manifest bytes the attested deployment must run (pinned file or CDN)."""


def pinned_manifest(manifest: bytes) -> ManifestProvider:
    """A provider for a manifest the user pinned (a file read at startup)."""

    async def provide(_client: httpx.AsyncClient) -> bytes:
        return manifest

    return provide


def _go_os() -> str:
    return platform.system().lower() or "unknown"


def _go_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine or "unknown"
    )


@dataclass(frozen=True)
class SessionConfig:
    """Where the upstream is and what it must prove before it gets any request body."""

    api_url: str
    """Base URL of the Privatemode API (or the local backend), without a trailing slash."""
    trusted_roots: Sequence[TrustedRoot]
    manifest: ManifestProvider
    api_key: str | None = field(default=None, repr=False)
    certificates: CertificateSource | None = None
    ocsp_allow_unknown: bool = True
    ocsp_revoked_grace_period: timedelta = timedelta(hours=48)
    secret_use_seconds: float = 45 * 60.0
    """How long one secret is used (the server keeps it 1 h; 15 min buffer, protocol §2.7)."""
    secret_refresh_ahead_seconds: float = 5 * 60.0
    """The background exchange starts this long before the current secret's use ends."""
    exchange_attempts: int = 3
    exchange_retry_delay_seconds: float = 1.0
    reset_retry_delay_seconds: float = 0.05
    background_retry_seconds: float = 10.0
    """Wait of the background refresher after a failed exchange (doubles up to 5 min)."""
    timeout_seconds: float = 300.0
    connect_timeout_seconds: float = 10.0
    max_connections: int = 64
    verify_tls: bool | str = True
    client_version: str = PRIVATEMODE_CLIENT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_url", self.api_url.rstrip("/"))
        if self.exchange_attempts < 1:
            raise ValueError("exchange_attempts must be at least 1")
        if not 0 <= self.secret_refresh_ahead_seconds < self.secret_use_seconds:
            raise ValueError("secret_refresh_ahead_seconds must be in [0, secret_use_seconds)")


class UpstreamError(Exception):
    """The upstream could not be used for this request; `status_code` is what the proxy answers."""

    status_code = 502
    error_type = "upstream_error"
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """No verified secret: attestation or the secret exchange failed (the proxy answers 503)."""

    status_code = 503
    error_type = "service_unavailable"
    code = "upstream_unavailable"


class AttestationFailed(UpstreamUnavailable):
    code = "attestation_failed"

    def __init__(self, message: str, *, final: bool = True) -> None:
        super().__init__(message)
        self.final = final
        """False when the attestation could not be fetched (worth retrying)."""


class SecretExchangeFailed(UpstreamUnavailable):
    code = "secret_exchange_failed"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class _EndpointError(Exception):
    """The attest or secret endpoint answered an error or garbage (may be retried)."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


_EXCHANGE_ERRORS = (_EndpointError, SecretExchangeError, httpx.HTTPError, ValueError)
"""What one secret exchange attempt may raise that another attempt may not."""


@dataclass(frozen=True)
class _SecretState:
    secret: Secret
    exchange_serial: int
    """Which exchange (counted from 1, in the order they started) produced this secret."""
    obtained_at: datetime
    use_until_wall: datetime
    use_until: float  # time.monotonic()
    refresh_at: float  # time.monotonic()


@dataclass(frozen=True)
class UpstreamResponse:
    """A decrypted upstream answer: the HTTP status and the JSON body."""

    status_code: int
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300


def _snippet(content: bytes, limit: int = 300) -> str:
    text = content[:limit].decode("utf-8", errors="replace").strip()
    return text + ("…" if len(content) > limit else "")


def _error_message_of(content: bytes) -> str:
    """The `error.message` of an OpenAI-shaped body, else the start of the raw body."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        return _snippet(content)
    if isinstance(parsed, dict):
        err = parsed.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
        if isinstance(parsed.get("message"), str):
            return str(parsed["message"])[:300]
    return _snippet(content)


class UpstreamSession:
    """Attested, encrypted access to one Privatemode API; one per proxy, one event loop."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._client: httpx.AsyncClient | None = None
        self._attestation: AttestationResult | None = None
        self._state: _SecretState | None = None
        self._exchange_task: asyncio.Task[_SecretState] | None = None
        self._exchanges_started = 0  # serial of the latest exchange task
        self._first_trusted_serial = 1
        """Secrets from exchanges that started earlier may be lost upstream: a `no secret for ID`
        answer arrived after those exchanges began (protocol §5: force a new exchange)."""
        self._refresher: asyncio.Task[None] | None = None
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None
        self._last_failure: float | None = None  # time.monotonic() of the last failed exchange
        self._exchanges = 0
        self._static_headers = {
            "Privatemode-Version": config.client_version,
            "Privatemode-OS": _go_os(),
            "Privatemode-Architecture": _go_arch(),
            "Privatemode-Client": "Proxy",
            "User-Agent": f"privatemode-integrations-proxy/{__version__}",
        }
        if config.api_key:
            self._static_headers["Authorization"] = f"Bearer {config.api_key}"

    def __repr__(self) -> str:
        return f"UpstreamSession(api_url={self.config.api_url!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, background_refresh: bool = True) -> None:
        """Open the connection pool and start attesting and exchanging in the background."""
        if self._client is not None:
            return
        cfg = self.config
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(cfg.timeout_seconds, connect=cfg.connect_timeout_seconds),
            limits=httpx.Limits(
                max_connections=cfg.max_connections,
                max_keepalive_connections=cfg.max_connections,
            ),
            verify=cfg.verify_tls,
            follow_redirects=False,
        )
        if background_refresh:
            self._refresher = asyncio.create_task(self._keep_secret_fresh(), name="secret-refresh")

    async def aclose(self) -> None:
        tasks = [t for t in (self._refresher, self._exchange_task) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: S110 - shutting down
                pass
        self._refresher = self._exchange_task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("UpstreamSession.start() was not called")
        return self._client

    # -- status --------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether a verified secret is usable right now."""
        state = self._state
        return state is not None and self._usable(state, time.monotonic())

    def _usable(self, state: _SecretState, now: float) -> bool:
        return now < state.use_until and state.exchange_serial >= self._first_trusted_serial

    def status(self) -> dict[str, Any]:
        """What was attested and until when the secret is used; never the secret itself."""
        state = self._state
        att = self._attestation
        return {
            "upstream": self.config.api_url,
            "ready": self.ready,
            "attestation": att.summary() if att is not None else None,
            "secret": None
            if state is None
            else {
                "obtained_at": state.obtained_at.isoformat(),
                "use_until": state.use_until_wall.isoformat(),
            },
            "secret_exchanges": self._exchanges,
            "last_error": self._last_error,
            "last_error_at": self._last_error_at.isoformat() if self._last_error_at else None,
        }

    # -- the secret --------------------------------------------------------------------------

    async def current_secret(self) -> Secret:
        """A verified secret; waits only when none is usable. Raises `UpstreamUnavailable`."""
        return (await self._current_state()).secret

    async def _current_state(self) -> _SecretState:
        state = self._state
        now = time.monotonic()
        if state is not None and self._usable(state, now):
            if now >= state.refresh_at and self._may_refresh(now):
                self._exchange()  # refresh in the background; this request keeps the old one
            return state
        return await self._trusted_state()

    async def renew_secret(self, stale: Secret) -> Secret:
        """A secret other than `stale` (which the upstream no longer knows).

        Call it as soon as the `no secret for ID` answer arrives: the upstream may have lost
        every secret it held then (a restart), including one whose exchange was still under way,
        so only a secret from an exchange started after this call is taken.
        """
        state = self._state
        if state is not None and state.secret.id == stale.id:
            serial = state.exchange_serial
        else:  # an older secret: distrust every exchange started so far
            serial = self._exchanges_started
        return (await self._renew_state(stale.id, serial)).secret

    async def _renew_state(self, stale_id: str, stale_serial: int) -> _SecretState:
        """`stale_serial` is the serial of the exchange that produced the stale secret, or of
        a later one; every exchange up to the latest started is distrusted, unless an earlier
        failure already distrusted the stale secret (so one loss forces one exchange)."""
        if stale_serial >= self._first_trusted_serial:
            self._first_trusted_serial = self._exchanges_started + 1
        state = self._state
        if state is not None and (
            state.secret.id == stale_id or state.exchange_serial < self._first_trusted_serial
        ):
            self._state = None  # not to be handed out again
        return await self._trusted_state()

    async def _trusted_state(self) -> _SecretState:
        """A usable secret from an exchange that started after the last `no secret for ID`.

        Waits for a suspect exchange in flight to end before starting the next one, so that
        there is never more than one exchange at a time; concurrent callers share it.
        """
        while True:
            state = self._state
            if state is not None and self._usable(state, time.monotonic()):
                return state
            task = self._exchange_task
            if (
                task is not None
                and not task.done()
                and self._exchanges_started < self._first_trusted_serial
            ):
                await asyncio.wait([task])  # its outcome is of no use here; errors are logged
                continue
            state = await asyncio.shield(self._exchange())
            if state.exchange_serial >= self._first_trusted_serial:
                return state
            # Another `no secret for ID` arrived while this exchange ran: exchange again.

    def _may_refresh(self, now: float) -> bool:
        failed = self._last_failure
        return failed is None or now - failed >= self.config.background_retry_seconds

    def _exchange(self) -> asyncio.Task[_SecretState]:
        """The exchange in flight, or a new one: never two at a time."""
        task = self._exchange_task
        if task is None or task.done():
            self._exchanges_started += 1
            serial = self._exchanges_started
            task = asyncio.create_task(self._obtain_secret(serial), name="secret-exchange")
            task.add_done_callback(self._exchange_done)
            self._exchange_task = task
        return task

    def _exchange_done(self, task: asyncio.Task[_SecretState]) -> None:
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here so a failure never goes unreported
        if exc is not None:
            self._last_error = str(exc)
            self._last_error_at = datetime.now(UTC)
            self._last_failure = time.monotonic()
            logger.error("upstream not usable: %s", exc)

    async def _obtain_secret(self, serial: int) -> _SecretState:
        """Exchange (3 attempts, 1 s apart); after a failed exchange attest again (new mesh CA).

        A failed verification (wrong manifest, bad evidence) or a refused API key is final.
        """
        cfg = self.config
        last: Exception | None = None
        for attempt in range(cfg.exchange_attempts):
            if attempt:
                await asyncio.sleep(cfg.exchange_retry_delay_seconds)
            try:
                if self._attestation is None:
                    await self._attest()
                try:
                    secret = await self._exchange_once()
                except _EXCHANGE_ERRORS as exc:
                    if isinstance(exc, _EndpointError) and exc.final:
                        raise
                    # The mesh CA may have changed (a new deployment): attest again, then retry.
                    logger.warning("secret exchange failed (%s); attesting again", _describe(exc))
                    await self._attest()
                    secret = await self._exchange_once()
            except AttestationFailed as exc:
                if exc.final:
                    raise
                last = exc
            except _EndpointError as exc:
                if exc.final:
                    raise SecretExchangeFailed(
                        f"secret exchange with {cfg.api_url} failed: {exc}"
                    ) from None
                last = exc
            except _EXCHANGE_ERRORS as exc:
                last = exc
            else:
                return self._install(secret, serial)
            logger.warning(
                "secret exchange attempt %d of %d failed: %s",
                attempt + 1,
                cfg.exchange_attempts,
                _describe(last),
            )
        if isinstance(last, AttestationFailed):
            raise last
        raise SecretExchangeFailed(
            f"secret exchange with {cfg.api_url} failed after {cfg.exchange_attempts} attempts: "
            f"{_describe(last)}"
        )

    def _install(self, secret: Secret, serial: int) -> _SecretState:
        cfg = self.config
        now, wall = time.monotonic(), datetime.now(UTC)
        state = _SecretState(
            secret=secret,
            exchange_serial=serial,
            obtained_at=wall,
            use_until_wall=wall + timedelta(seconds=cfg.secret_use_seconds),
            use_until=now + cfg.secret_use_seconds,
            refresh_at=now + cfg.secret_use_seconds - cfg.secret_refresh_ahead_seconds,
        )
        self._state = state
        self._exchanges += 1
        self._last_error = None
        self._last_error_at = None
        self._last_failure = None
        logger.info("new secret in use until %s", state.use_until_wall.isoformat())
        return state

    async def _attest(self) -> AttestationResult:
        """Attest the upstream and keep its verified mesh CA; raises `AttestationFailed`."""
        cfg = self.config
        nonce = secrets.token_bytes(32)
        body = orjson.dumps({"Nonce": base64.b64encode(nonce).decode("ascii")})
        try:
            resp = await self.client.post(
                cfg.api_url + ATTEST_PATH, content=body, headers=self._control_headers()
            )
        except httpx.HTTPError as exc:
            raise AttestationFailed(
                f"attestation of {cfg.api_url} failed: could not reach {ATTEST_PATH}: "
                f"{_describe(exc)}",
                final=False,
            ) from None
        if resp.status_code != 200:
            raise AttestationFailed(
                f"attestation of {cfg.api_url} failed: {ATTEST_PATH} answered HTTP "
                f"{resp.status_code}{_auth_hint(resp.status_code)}: "
                f"{_error_message_of(resp.content)}",
                final=resp.status_code in (401, 403),
            )
        try:
            doc_b64 = orjson.loads(resp.content)["AttestationDoc"]
            attestation_doc = base64.b64decode(doc_b64, validate=True)
        except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error, ValueError):
            raise AttestationFailed(
                f"attestation of {cfg.api_url} failed: {ATTEST_PATH} did not answer "
                '{"AttestationDoc": <base64>}'
            ) from None
        try:
            expected_manifest = await cfg.manifest(self.client)
        except Exception as exc:
            raise AttestationFailed(
                f"attestation of {cfg.api_url} failed: could not get the expected manifest: {exc}",
                final=False,
            ) from None
        try:
            # Off the event loop: the verifier may fetch certificates and does RSA/ECDSA work.
            result = await asyncio.to_thread(
                verify_attestation,
                nonce,
                attestation_doc,
                expected_manifest=expected_manifest,
                trusted_roots=cfg.trusted_roots,
                certificates=cfg.certificates,
            )
        except AttestationError as exc:
            self._attestation = None
            raise AttestationFailed(f"attestation of {cfg.api_url} failed: {exc}") from None
        self._attestation = result
        logger.info(
            "attested %s: product %s, measurement %s, manifest sha256 %s",
            cfg.api_url,
            result.product,
            result.measurement,
            result.manifest_sha256,
        )
        return result

    async def _exchange_once(self) -> Secret:
        attestation = self._attestation
        if attestation is None:
            raise _EndpointError("no attested mesh CA")
        exchange = ClientSecretExchange()
        resp = await self.client.post(
            self.config.api_url + SECRET_PATH,
            content=exchange.request_body(),
            headers=self._control_headers(),
        )
        if resp.status_code != 200:
            raise _EndpointError(
                f"{SECRET_PATH} answered HTTP {resp.status_code}{_auth_hint(resp.status_code)}: "
                f"{_error_message_of(resp.content)}",
                final=resp.status_code in (401, 403),
            )
        # Raises SecretExchangeError (a ValueError) on a bad chain, signature or body.
        return exchange.complete(resp.content, attestation.mesh_ca)

    async def _keep_secret_fresh(self) -> None:
        """Background: obtain the first secret and replace each one before its use ends."""
        backoff = self.config.background_retry_seconds
        while True:
            try:
                await self.current_secret()
                state = self._state
                if state is None:
                    continue
                delay = state.refresh_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                await asyncio.shield(self._exchange())
                backoff = self.config.background_retry_seconds
            except UpstreamUnavailable:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 300.0)
            except Exception:
                logger.exception("secret refresher failed; trying again in %.0f s", backoff)
                await asyncio.sleep(backoff)

    # -- requests -------------------------------------------------------------------------------

    def _control_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        for name in ("Authorization", "Privatemode-Version"):
            if name in self._static_headers:
                headers[name] = self._static_headers[name]
        return headers

    def _inference_headers(
        self, secret: Secret, model: str, request_id: str, attempt: int
    ) -> dict[str, str]:
        headers = dict(self._static_headers)
        headers.update(
            nvidia_ocsp_policy_headers(
                secret.key,
                allow_unknown=self.config.ocsp_allow_unknown,
                revoked_grace_period=self.config.ocsp_revoked_grace_period,
            )
        )
        rid = f"proxy_{request_id}_{attempt}"
        headers["Content-Type"] = "application/json"
        headers["Privatemode-Target-Model"] = model
        headers["Privatemode-Secret-ID"] = secret.id
        headers["Privatemode-User-Request-ID"] = rid
        headers["X-Request-ID"] = rid
        return headers

    async def post_embeddings(self, body: dict[str, Any]) -> UpstreamResponse:
        """Encrypt `body`, send it to `/v1/embeddings`, decrypt the answer.

        Raises `UpstreamUnavailable` (no verified secret), `UpstreamError` (transport failure or
        a success answer that fails decryption). Upstream error statuses are returned, with their
        bodies decrypted where possible.
        """
        return await self.post_encrypted(EMBEDDINGS_PATH, body)

    async def post_encrypted(self, path: str, body: dict[str, Any]) -> UpstreamResponse:
        model = body.get("model")
        if not isinstance(model, str):
            raise ValueError("the request body must name a 'model'")
        problem = model_name_problem(model)
        if problem is not None:
            raise ValueError(problem)
        plaintext = orjson.dumps(body)
        state = await self._current_state()
        secret = state.secret
        request_id = secrets.token_hex(8)
        renewed = reset_retried = False
        attempt = 0
        while True:
            cipher = RequestCipher(secret.key, secret.id)  # a fresh request nonce per attempt
            content = cipher.encrypt_request(plaintext)
            headers = self._inference_headers(secret, model, request_id, attempt)
            attempt += 1
            try:
                resp = await self.client.post(
                    self.config.api_url + path, content=content, headers=headers
                )
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
                if reset_retried:
                    raise UpstreamError(
                        f"connection to {self.config.api_url} failed twice: {_describe(exc)}"
                    ) from None
                reset_retried = True
                logger.info("connection reset (%s); retrying once", type(exc).__name__)
                await asyncio.sleep(self.config.reset_retry_delay_seconds)
                continue
            except httpx.TimeoutException as exc:
                raise UpstreamTimeout(
                    f"upstream {self.config.api_url} did not answer in time: {_describe(exc)}"
                ) from None
            except httpx.HTTPError as exc:
                raise UpstreamError(
                    f"could not reach upstream {self.config.api_url}: {_describe(exc)}"
                ) from None
            if resp.status_code == 500 and NO_SECRET_FOR_ID in resp.content and not renewed:
                renewed = True
                logger.info("upstream does not know our secret; exchanging a new one")
                # At once, before any other await: exchanges started from now on are trusted.
                state = await self._renew_state(secret.id, state.exchange_serial)
                secret = state.secret
                continue
            return self._decode(cipher, resp)

    def _decode(self, cipher: RequestCipher, resp: httpx.Response) -> UpstreamResponse:
        headers = {
            k: v
            for k, v in resp.headers.items()
            if k.lower() in ("retry-after", "retry-after-ms")
            or k.lower().startswith("x-ratelimit-")
        }
        encrypted = resp.headers.get("Privatemode-Encrypted", "").lower() != "false"
        content = resp.content
        if resp.is_success:
            if not encrypted:
                # Protocol §3 lets such answers pass as they are, but only the attested backend
                # can encrypt: a plaintext success answer may come from anyone on the path, so
                # the header is honoured for error answers only (fail closed).
                raise UpstreamError(
                    f"the upstream answered HTTP {resp.status_code} marked "
                    "'Privatemode-Encrypted: false'; a success answer must be encrypted by the "
                    "attested backend, so it was discarded"
                )
            try:
                # Decryption parses every field to check it; take that parse, don't redo it.
                parsed = cipher.decrypt_response_object(content)
            except FieldCipherError as exc:
                # Also what a body that is not a JSON object gives.
                raise UpstreamError(
                    f"the upstream answer failed decryption and was discarded: {exc}"
                ) from None
            return UpstreamResponse(resp.status_code, parsed, headers)
        # Error bodies may carry encrypted fields: try, then fall back to the raw body.
        body: Any = None
        if encrypted:
            try:
                body = orjson.loads(cipher.decrypt_response(content))
            except (FieldCipherError, orjson.JSONDecodeError, ValueError):
                body = None
        if body is None:
            try:
                body = orjson.loads(content)
            except orjson.JSONDecodeError:
                body = None
        if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
            message = _error_message_of(content) if content else resp.reason_phrase
            body = error_body(message, type="upstream_error")
        return UpstreamResponse(resp.status_code, body, headers)

    async def get_models(self) -> tuple[int, bytes]:
        """`GET /v1/models`, unencrypted and passed through (protocol §3)."""
        headers = dict(self._static_headers)
        try:
            resp = await self.client.get(self.config.api_url + MODELS_PATH, headers=headers)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream did not answer in time: {_describe(exc)}") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"could not reach upstream {self.config.api_url}: {_describe(exc)}"
            ) from None
        return resp.status_code, resp.content


def _auth_hint(status: int) -> str:
    if status == 401:
        return " (the API key is missing or wrong)"
    if status == 403:
        return " (the API key is not allowed to do this)"
    return ""


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
