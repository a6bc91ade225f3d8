"""The upstream session's HTTP calls: attestation, secret exchange, inference, with the retries.

One `UpstreamSession` per proxy. It attests the Privatemode API (or the local backend), checks
the manifest, takes the mesh CA, and exchanges secrets over HPKE: one secret per API key (the
proxy's `--apiKey`, or each app's own key when the proxy has none; see `_keymodes`), kept fresh so
that requests never wait for an exchange unless their key has no usable secret at all (that
lifecycle is `_secrets.SecretKeeper`'s; this module makes the calls it needs). The
attested mesh CA is shared by all keys; an attestation or exchange uses the key of the request
that needs it. No request body leaves before a verified secret exists. Protocol notes §1-§5.
Its length (~700 lines) is the four calls with their own retry and refusal rules, kept together.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import platform
import random
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import orjson

from privatemode_proxy import __version__
from privatemode_proxy._exceptions import (
    AttestationFailed,
    SecretExchangeFailed,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeout,
)
from privatemode_proxy._keymodes import ApiKey, bearer_token
from privatemode_proxy._secrets import SecretKeeper, SecretState
from privatemode_proxy.attestation import (
    AttestationError,
    AttestationResult,
    CertificateSource,
    CollateralUnavailableError,
    IntelRoot,
    TdxCollateralSource,
    TrustedRoot,
    verify_attestation,
)
from privatemode_proxy.openai import error_body, error_type_for_status
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

The one place this string lives. From v1.40 the API reads the client's request id from
`Privatemode-User-Request-ID`."""

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
    tdx_roots: Sequence[IntelRoot] | None = None
    """Intel roots trusted for TDX evidence (None: the embedded Intel SGX Root CA)."""
    tdx_collateral: TdxCollateralSource | None = None
    """Intel PCS collateral for TDX evidence (None: TDX evidence is refused)."""
    ocsp_allow_unknown: bool = True
    ocsp_revoked_grace_period: timedelta = timedelta(hours=48)
    secret_use_seconds: float = 45 * 60.0
    """How long one secret is used (the server keeps it 1 h; 15 min buffer, protocol §2.7)."""
    secret_refresh_ahead_seconds: float = 5 * 60.0
    """The background exchange starts this long before the current secret's use ends."""
    exchange_attempts: int = 3
    """Attempts at attestation + secret exchange before a request fails (official: 3)."""
    exchange_retry_delay_seconds: float = 1.0
    """Backoff base between attempts: about 1x, then 2x this, plus up to 25 % jitter."""
    reset_retry_delay_seconds: float = 0.05
    background_retry_seconds: float = 10.0
    """Wait of the background refresher after a failed exchange (doubles up to 5 min)."""
    timeout_seconds: float = 300.0
    connect_timeout_seconds: float = 10.0
    max_connections: int = 64
    verify_tls: bool | str = True
    client_version: str = PRIVATEMODE_CLIENT_VERSION
    max_api_keys: int = 1024
    """App keys with a secret at once (keyless proxy); the least recently used is forgotten."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_url", self.api_url.rstrip("/"))
        if self.exchange_attempts < 1:
            raise ValueError("exchange_attempts must be at least 1")
        if not 0 <= self.secret_refresh_ahead_seconds < self.secret_use_seconds:
            raise ValueError("secret_refresh_ahead_seconds must be in [0, secret_use_seconds)")


class _EndpointError(Exception):
    """The attest or secret endpoint answered an error or garbage (may be retried)."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


_FINAL_STATUSES = frozenset(range(400, 500)) - {408, 425, 429}
"""Answers of attest/secret that another attempt won't change (401/403 become auth errors)."""


_PASSED_HEADERS = frozenset({"retry-after", "retry-after-ms", "www-authenticate"})
"""Headers of an upstream error answer that reach the app (with every `x-ratelimit-*`)."""


def uuid7() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits (Python 3.14 has one)."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    value = value & ~(0xF << 76) | 7 << 76  # version
    value = value & ~(0x3 << 62) | 0x2 << 62  # variant
    return uuid.UUID(int=value)


_EXCHANGE_ERRORS = (_EndpointError, SecretExchangeError, httpx.HTTPError, ValueError)
"""What one secret exchange attempt may raise that another attempt may not."""


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
        self._proxy_key = ApiKey(config.api_key, "proxy") if config.api_key else None
        self._secrets = SecretKeeper(config, self._proxy_key, self._obtain_secret)
        self._static_headers = {
            "Privatemode-Version": config.client_version,
            "Privatemode-OS": _go_os(),
            "Privatemode-Architecture": _go_arch(),
            "Privatemode-Client": "Proxy",
            "User-Agent": f"privatemode-integrations-proxy/{__version__}",
        }

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
            self._secrets.start_refresher()

    async def aclose(self) -> None:
        await self._secrets.aclose()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("UpstreamSession.start() was not called")
        return self._client

    # -- API keys ------------------------------------------------------------------------------

    def api_key_for(self, authorization: str | None) -> ApiKey | None:
        """The key a request with this `Authorization` header value is served with.

        The proxy's `--apiKey` when it has one (the app's header is overwritten), else the app's
        bearer token, else None (no key: for an upstream that needs none, like the local backend).
        """
        if self._proxy_key is not None:
            return self._proxy_key
        token = bearer_token(authorization)
        return ApiKey(token, "app") if token is not None else None

    @property
    def uses_app_keys(self) -> bool:
        """True when requests are served with the apps' own keys (no `--apiKey`)."""
        return self._proxy_key is None

    # -- status --------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether a verified secret is usable right now (for the proxy's key, or any app's)."""
        return self._secrets.ready

    @property
    def _state(self) -> SecretState | None:
        """The newest secret in use (tests read it to look for leaks)."""
        return self._secrets.newest_state

    def status(self) -> dict[str, Any]:
        """What was attested and until when the secret is used; never a secret nor a key."""
        secrets = self._secrets
        slot = secrets.default
        state = slot.state if slot.ready else secrets.newest_state
        att = self._attestation
        # A keyless proxy's attempt without a key, refused by an API that wants keys, is no
        # failure: it is waiting for the apps' keys.
        waiting = self.uses_app_keys and slot.refused
        return {
            "upstream": self.config.api_url,
            "ready": self.ready,
            "api_keys": "from each app's Authorization header"
            if self.uses_app_keys
            else "the proxy's --apiKey",
            "app_keys_with_secret": sum(1 for s in secrets.app_slots.values() if s.ready),
            "waiting_for_app_key": waiting,
            "attestation": att.summary() if att is not None else None,
            "secret": None
            if state is None
            else {
                "obtained_at": state.obtained_at.isoformat(),
                "use_until": state.use_until_wall.isoformat(),
            },
            "secret_exchanges": sum(s.exchanges for s in secrets.slots()),
            "last_error": None if waiting else slot.last_error,
            "last_error_at": None
            if waiting or slot.last_error_at is None
            else slot.last_error_at.isoformat(),
        }

    # -- the secret --------------------------------------------------------------------------

    async def current_secret(self, key: ApiKey | None = None) -> Secret:
        """A verified secret for `key`; waits only when none is usable. Raises `UpstreamError`."""
        secrets = self._secrets
        return (await secrets.current_state(secrets.slot_for(key), key)).secret

    def _backoff(self, retry: int) -> float:
        """Seconds before retry number `retry` (1, 2, ...): about 1 s, then 2 s, with jitter."""
        base = self.config.exchange_retry_delay_seconds * 2.0 ** (retry - 1)
        return base * (1.0 + 0.25 * random.random())

    async def _obtain_secret(self, key: ApiKey | None) -> Secret:
        """Exchange, attesting first if needed; after a failed exchange attest again (a new
        deployment has a new mesh CA). Transient failures (connection errors, 5xx, 429, an AMD
        certificate or CRL that could not be fetched) are retried with backoff and jitter, as
        the official proxy does; a failed verification, a manifest mismatch or a refused API
        key is final.
        """
        cfg = self.config
        last: Exception | None = None
        for attempt in range(cfg.exchange_attempts):
            if attempt:
                await asyncio.sleep(self._backoff(attempt))
            try:
                if self._attestation is None:
                    await self._attest(key)
                try:
                    return await self._exchange_once(key)
                except _EXCHANGE_ERRORS as exc:
                    if isinstance(exc, _EndpointError) and exc.final:
                        raise
                    logger.warning("secret exchange failed (%s); attesting again", _describe(exc))
                    await self._attest(key)
                    return await self._exchange_once(key)
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
            logger.warning(
                "attestation/secret exchange attempt %d of %d failed: %s",
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

    async def _attest(self, key: ApiKey | None) -> AttestationResult:
        """Attest the upstream and keep its verified mesh CA; raises `AttestationFailed`
        (or `UpstreamAuthError` when the API refuses the key)."""
        cfg = self.config
        nonce = secrets.token_bytes(32)
        body = orjson.dumps({"Nonce": base64.b64encode(nonce).decode("ascii")})
        try:
            resp = await self.client.post(
                cfg.api_url + ATTEST_PATH, content=body, headers=self._control_headers(key)
            )
        except httpx.HTTPError as exc:
            raise AttestationFailed(
                f"attestation of {cfg.api_url} failed: could not reach {ATTEST_PATH}: "
                f"{_describe(exc)}",
                final=False,
            ) from None
        if resp.status_code in (401, 403):
            raise _auth_error(resp, ATTEST_PATH)
        if resp.status_code != 200:
            raise AttestationFailed(
                f"attestation of {cfg.api_url} failed: {ATTEST_PATH} answered HTTP "
                f"{resp.status_code}: {_error_message_of(resp.content)}",
                final=resp.status_code in _FINAL_STATUSES,
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
                tdx_roots=cfg.tdx_roots,
                tdx_collateral=cfg.tdx_collateral,
            )
        except AttestationError as exc:
            self._attestation = None
            # Collateral that could not be fetched (AMD KDS down) is transient; anything wrong
            # with the evidence itself, a manifest mismatch included, is final.
            raise AttestationFailed(
                f"attestation of {cfg.api_url} failed: {exc}",
                final=not isinstance(exc, CollateralUnavailableError),
            ) from None
        self._attestation = result
        logger.info(
            "attested %s: product %s, measurement %s, manifest sha256 %s",
            cfg.api_url,
            result.product,
            result.measurement,
            result.manifest_sha256,
        )
        return result

    async def _exchange_once(self, key: ApiKey | None) -> Secret:
        attestation = self._attestation
        if attestation is None:
            raise _EndpointError("no attested mesh CA")
        exchange = ClientSecretExchange()
        resp = await self.client.post(
            self.config.api_url + SECRET_PATH,
            content=exchange.request_body(),
            headers=self._control_headers(key),
        )
        if resp.status_code in (401, 403):
            raise _auth_error(resp, SECRET_PATH)
        if resp.status_code != 200:
            raise _EndpointError(
                f"{SECRET_PATH} answered HTTP {resp.status_code}: "
                f"{_error_message_of(resp.content)}",
                final=resp.status_code in _FINAL_STATUSES,
            )
        # Raises SecretExchangeError (a ValueError) on a bad chain, signature or body.
        return exchange.complete(resp.content, attestation.mesh_ca)

    # -- requests -------------------------------------------------------------------------------

    def _control_headers(self, key: ApiKey | None) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Privatemode-Version": self._static_headers["Privatemode-Version"],
        }
        if key is not None:
            headers["Authorization"] = key.authorization
        return headers

    def _inference_headers(
        self, secret: Secret, model: str, request_id: str, attempt: int, key: ApiKey | None
    ) -> dict[str, str]:
        headers = dict(self._static_headers)
        if key is not None:
            headers["Authorization"] = key.authorization
        headers.update(
            nvidia_ocsp_policy_headers(
                secret.key,
                allow_unknown=self.config.ocsp_allow_unknown,
                revoked_grace_period=self.config.ocsp_revoked_grace_period,
            )
        )
        headers["Content-Type"] = "application/json"
        headers["Privatemode-Target-Model"] = model
        headers["Privatemode-Secret-ID"] = secret.id
        headers["Privatemode-User-Request-ID"] = f"{request_id}_{attempt}"
        return headers

    async def post_embeddings(
        self, body: dict[str, Any], key: ApiKey | None = None
    ) -> UpstreamResponse:
        """Encrypt `body`, send it to `/v1/embeddings` with `key`, decrypt the answer.

        Raises `UpstreamAuthError` (the API refused `key` at the exchange), `UpstreamUnavailable`
        (no verified secret), `UpstreamError` (transport failure or a success answer that fails
        decryption). Upstream error statuses are returned, with their bodies decrypted where
        possible.
        """
        return await self.post_encrypted(EMBEDDINGS_PATH, body, key)

    async def post_encrypted(
        self, path: str, body: dict[str, Any], key: ApiKey | None = None
    ) -> UpstreamResponse:
        model = body.get("model")
        if not isinstance(model, str):
            raise ValueError("the request body must name a 'model'")
        problem = model_name_problem(model)
        if problem is not None:
            raise ValueError(problem)
        key = self._proxy_key or key
        secrets = self._secrets
        slot = secrets.slot_for(key)
        plaintext = orjson.dumps(body)
        state = await secrets.current_state(slot, key)
        secret = state.secret
        request_id = f"proxy_{uuid7()}"
        renewed = reset_retried = False
        attempt = 0
        while True:
            cipher = RequestCipher(secret.key, secret.id)  # a fresh request nonce per attempt
            content = cipher.encrypt_request(plaintext)
            headers = self._inference_headers(secret, model, request_id, attempt, key)
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
                state = await secrets.renew_state(slot, key, secret.id, state.exchange_serial)
                secret = state.secret
                continue
            return self._decode(cipher, resp)

    def _decode(self, cipher: RequestCipher, resp: httpx.Response) -> UpstreamResponse:
        headers = {
            k: v
            for k, v in resp.headers.items()
            if k.lower() in _PASSED_HEADERS or k.lower().startswith("x-ratelimit-")
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
            # Not OpenAI-shaped (a gateway's HTML page, plain text): wrapped, never dropped.
            message = _error_message_of(content) if content else resp.reason_phrase
            body = error_body(message, type=error_type_for_status(resp.status_code))
        return UpstreamResponse(resp.status_code, body, headers)

    async def get_models(self, key: ApiKey | None = None) -> tuple[int, bytes]:
        """`GET /v1/models`, unencrypted and passed through (protocol §3)."""
        headers = dict(self._static_headers)
        key = self._proxy_key or key
        if key is not None:
            headers["Authorization"] = key.authorization
        headers["Privatemode-User-Request-ID"] = f"proxy_{uuid7()}"
        try:
            resp = await self.client.get(self.config.api_url + MODELS_PATH, headers=headers)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream did not answer in time: {_describe(exc)}") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"could not reach upstream {self.config.api_url}: {_describe(exc)}"
            ) from None
        return resp.status_code, resp.content


def refused_api_key(config: SessionConfig) -> str | None:
    """Ask the API whether it takes the proxy's `--apiKey`; why not, or None.

    One attestation request (the answer is not used): a 401/403 means the key is refused, and
    the official proxy then refuses to start. Anything else (accepted, unreachable, a 5xx) is
    None: the session attests properly and retries on its own.
    """
    if not config.api_key:
        return None
    key = ApiKey(config.api_key, "proxy")
    body = orjson.dumps({"Nonce": base64.b64encode(secrets.token_bytes(32)).decode("ascii")})
    headers = {
        "Content-Type": "application/json",
        "Privatemode-Version": config.client_version,
        "Authorization": key.authorization,
    }
    try:
        resp = httpx.post(
            config.api_url + ATTEST_PATH,
            content=body,
            headers=headers,
            timeout=httpx.Timeout(
                config.connect_timeout_seconds * 3, connect=config.connect_timeout_seconds
            ),
            verify=config.verify_tls,
        )
    except httpx.HTTPError:
        return None
    if resp.status_code in (401, 403):
        return str(_auth_error(resp, ATTEST_PATH))
    return None


def _auth_error(resp: httpx.Response, path: str) -> UpstreamAuthError:
    what = "refused the API key" if resp.status_code == 401 else "does not allow this API key"
    return UpstreamAuthError(
        resp.status_code,
        f"the Privatemode API {what} (HTTP {resp.status_code} from {path}): "
        f"{_error_message_of(resp.content)}",
    )


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
