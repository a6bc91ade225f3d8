"""The local backend: the server side of the Privatemode protocol with a real embedding model.

Endpoints (one HTTP server, as the real service):
- `POST /privatemode/v1/attest`  — the Contrast attestation response of `LocalIdentity`;
- `POST /privatemode/v1/secret`  — HPKE sender side, signed with the mesh certificate's key;
- `POST /v1/embeddings`          — decrypt fields, validate, embed, encrypt fields;
- `GET /v1/models`, `GET /healthz` — unencrypted.

CPU work (HPKE, signing, AES-GCM, tokenising, JSON encoding) runs in worker threads and the model
in the batcher's engine thread, so the event loop only moves bytes; a bad request is refused
before it reaches the engine and never holds up the others.

Over 600 lines on purpose: it plays every part of the real service the proxy meets (protocol
endpoints, admission, and the stand-in options for API keys, Matryoshka sizes and rate limits),
and each of those is a few lines of routing around the shared pieces it imports.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._admission import Admission, AdmissionLimits, Refused, unless_disconnected
from .._catalogue import CATALOGUE, ModelInfo
from .._serving import ServerThread
from ..openai import (
    AUTHENTICATION,
    NOT_FOUND,
    SERVER,
    ApiError,
    EncodingFormat,
    check_model,
    check_token_counts,
    parse_embeddings_fields,
    parse_json_object,
)
from ..protocol import (
    EMBEDDINGS_REQUEST_PLAIN_FIELDS,
    EMBEDDINGS_RESPONSE_PLAIN_FIELDS,
    FieldCipherError,
    ResponseCipher,
    UnknownSecretError,
    serve_secret_exchange,
)
from ._batcher import (
    DEFAULT_MAX_BATCH_TEXTS,
    DEFAULT_MAX_BATCH_TOKENS,
    BackendStopping,
    BatcherStats,
    EmbeddingBatcher,
)
from ._encoding import embeddings_response_body, reduce_dimensions
from ._engine import EmbeddingEngine, load_default_engine
from ._issuer import LocalIdentity
from ._ratelimit import RateLimit, RateLimiter
from ._requestlog import RequestLog, RequestLogMiddleware
from ._secretstore import DEFAULT_SECRET_TTL, Clock, SecretStore

logger = logging.getLogger("privatemode_proxy.local")

T = TypeVar("T")

ATTEST_PATH = "/privatemode/v1/attest"
SECRET_PATH = "/privatemode/v1/secret"  # noqa: S105 (a URL path, not a password)
EMBEDDINGS_PATH = "/v1/embeddings"
MODELS_PATH = "/v1/models"
HEALTH_PATH = "/healthz"

NONCE_SIZE = 32
_UNENCRYPTED = {"Privatemode-Encrypted": "false"}


@dataclass(frozen=True)
class BackendLimits:
    """Sizes and concurrency of the backend; the defaults suit a laptop."""

    max_body_bytes: int = 64 * 1024 * 1024
    """Largest `/v1/embeddings` body (413 above). 2,048 long inputs, JSON-escaped and hex-encrypted,
    stay below it."""
    max_handshake_body_bytes: int = 64 * 1024
    """Largest attest/secret body (a secret request is ~1.7 KB)."""
    max_concurrent_requests: int = 16
    """Embedding requests decrypted, embedded and encoded at once; the rest wait (memory bound)."""
    cpu_threads: int = 2
    """Threads for HPKE, signing, AES-GCM, tokenising and JSON (the machine's cores)."""
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    max_batch_texts: int = DEFAULT_MAX_BATCH_TEXTS
    rate_limit: RateLimit | None = None
    """Per-key requests and tokens per window (429 with `Retry-After` past it); None: no limit."""


def served_model_info(engine: EmbeddingEngine, info: ModelInfo | None = None) -> ModelInfo:
    """The catalogue entry of the engine's model (or `info`, the entry to serve the engine's
    model under), checked against the engine itself."""
    info = info if info is not None else CATALOGUE.get(engine.model_id)
    if info is None:
        return ModelInfo(
            id=engine.model_id,
            native_dimensions=engine.dimensions,
            max_tokens_per_input=engine.max_tokens_per_input,
            max_inputs_per_request=2048,
            max_tokens_per_request=300_000,
            tokenizer_shipped=True,
            owned_by="privatemode-local",
        )
    if (info.native_dimensions, info.max_tokens_per_input) != (
        engine.dimensions,
        engine.max_tokens_per_input,
    ):
        raise ValueError(
            f"engine for '{engine.model_id}' has {engine.dimensions} dimensions and "
            f"{engine.max_tokens_per_input} tokens per input; the catalogue says "
            f"{info.native_dimensions} and {info.max_tokens_per_input}"
        )
    return info


def _check_served_dimensions(dimensions: int | None, model: ModelInfo) -> None:
    """As the service's vLLM answers a size outside its `matryoshka_dimensions`: 400."""
    served = model.served_dimensions
    if dimensions is None or served is None or dimensions in served:
        return
    if dimensions == model.native_dimensions:
        return
    raise ApiError(
        400,
        f"model '{model.id}' serves 'dimensions' {sorted({*served, model.native_dimensions})} "
        f"only, got {dimensions}",
        param="dimensions",
        code="invalid_dimensions",
    )


def _json_response(
    body: bytes | Mapping[str, Any], *, headers: Mapping[str, str] | None = None
) -> Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content, media_type="application/json", headers=headers)


def _error_response(error: ApiError) -> Response:
    headers = dict(_UNENCRYPTED)
    headers.update(error.headers)
    if error.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return Response(
        error.body_bytes(),
        status_code=error.status_code,
        media_type="application/json",
        headers=headers,
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) past `limit` bytes without buffering more than that."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header", code="invalid_request") from None
        if size > limit:
            raise _too_large(size, limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(None, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int | None, limit: int) -> ApiError:
    given = f" is {size} bytes," if size is not None else " is"
    return ApiError(
        413,
        f"the request body{given} over the limit of {limit} bytes; send fewer or shorter "
        "inputs per request",
        code="request_too_large",
    )


class _Runtime:
    """What exists only while the app runs in an event loop (created by the lifespan)."""

    def __init__(self, engine: EmbeddingEngine, limits: BackendLimits) -> None:
        self.batcher = EmbeddingBatcher(
            engine,
            max_batch_tokens=limits.max_batch_tokens,
            max_batch_texts=limits.max_batch_texts,
        )
        self.cpu = anyio.CapacityLimiter(limits.cpu_threads)
        # Admitted before the body is read, so waiting requests hold no body in memory.
        self.admission = Admission(
            AdmissionLimits(
                max_active=limits.max_concurrent_requests,
                max_queued=4096,
                max_wait_seconds=600.0,
                max_body_bytes=limits.max_body_bytes,
                body_timeout_seconds=120.0,
            ),
            what="the local backend",
        )


class _Backend:
    """The request handlers and the state they share."""

    def __init__(
        self,
        identity: LocalIdentity,
        engine: EmbeddingEngine,
        *,
        api_keys: Collection[str],
        secrets: SecretStore,
        limits: BackendLimits,
        model_info: ModelInfo | None = None,
    ) -> None:
        self.identity = identity
        self.engine = engine
        self.model = served_model_info(engine, model_info)
        self.models = {self.model.id: self.model}
        self.set_api_keys(api_keys)
        self.secrets = secrets
        self.limits = limits
        self.created = int(time.time())
        self._runtime: _Runtime | None = None
        self.rate_limiter = RateLimiter(limits.rate_limit) if limits.rate_limit else None

    def __repr__(self) -> str:
        return f"_Backend(model={self.model.id!r}, api_keys={len(self._api_keys)})"

    def set_api_keys(self, keys: Collection[str]) -> None:
        self._api_keys = tuple(key.encode("utf-8") for key in keys if key)

    @property
    def runtime(self) -> _Runtime:
        if self._runtime is None:
            raise RuntimeError("the local backend app is not running (lifespan not started)")
        return self._runtime

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._runtime = _Runtime(self.engine, self.limits)
        await self._runtime.batcher.start()
        try:
            yield
        finally:
            await self._runtime.batcher.aclose()

    async def _cpu(self, func: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self.runtime.cpu)

    def _authorize(self, request: Request) -> None:
        if not self._api_keys:
            return
        header = request.headers.get("authorization")
        if header is None:
            raise ApiError(
                401,
                "no API key provided; send it as 'Authorization: Bearer <key>'",
                type=AUTHENTICATION,
                code="invalid_api_key",
            )
        scheme, _, token = header.partition(" ")
        given = token.strip().encode("utf-8")
        # Compared with every key, so the time taken does not say which one nearly matched.
        matches = [hmac.compare_digest(given, key) for key in self._api_keys]
        if scheme.lower() != "bearer" or not any(matches):
            raise ApiError(
                401,
                "incorrect API key provided; send the backend's key as 'Authorization: Bearer "
                "<key>'",
                type=AUTHENTICATION,
                code="invalid_api_key",
            )

    # --- handlers ---------------------------------------------------------------------------

    async def attest(self, request: Request) -> Response:
        self._authorize(request)
        body = await read_body(request, self.limits.max_handshake_body_bytes)
        fields = parse_json_object(body)
        nonce_b64 = fields.get("Nonce")
        if not isinstance(nonce_b64, str):
            raise ApiError(
                400,
                "'Nonce' is required: the base64 of 32 random bytes",
                param="Nonce",
                code="invalid_nonce",
            )
        try:
            nonce = base64.b64decode(nonce_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                400, "'Nonce' is not valid base64", param="Nonce", code="invalid_nonce"
            ) from None
        if len(nonce) != NONCE_SIZE:
            raise ApiError(
                400,
                f"'Nonce' must be {NONCE_SIZE} bytes, got {len(nonce)}",
                param="Nonce",
                code="invalid_nonce",
            )
        document = await self._cpu(self.identity.attestation_doc, nonce)
        return _json_response({"AttestationDoc": base64.b64encode(document).decode("ascii")})

    async def secret(self, request: Request) -> Response:
        self._authorize(request)
        body = await read_body(request, self.limits.max_handshake_body_bytes)
        parse_json_object(body)  # a clear 400 for a body that isn't JSON at all
        try:
            response_body, secret = await self._cpu(
                serve_secret_exchange,
                body,
                self.identity.mesh_key,
                self.identity.mesh_cert_der,
            )
        except ValueError as exc:
            # The protocol's errors describe the public key / encoding, never the secret.
            raise ApiError(
                400,
                f"malformed secret exchange request ({type(exc).__name__}: {exc}); send "
                '{"PublicKey": "<base64 of an MLKEM768-X25519 public key>"}',
                param="PublicKey",
                code="invalid_secret_request",
            ) from None
        self.secrets.put(secret.id, secret.key)
        return _json_response(response_body)

    async def embeddings(self, request: Request) -> Response:
        arrived = time.monotonic()
        self._authorize(request)
        admission = self.runtime.admission
        try:
            async with admission.slot() as slot:
                body = await admission.read_body(request, slot)
                # A client that went away (the proxy cancelling a sub-request) stops the work.
                return await unless_disconnected(
                    request.receive, self._embed(request, body, arrived)
                )
        except Refused as exc:
            raise ApiError(exc.status, exc.message, code=exc.code) from None

    async def _embed(self, request: Request, body: bytes, arrived: float) -> Response:
        outer = await self._cpu(parse_json_object, body)
        model = check_model(outer, self.models)
        cipher = ResponseCipher(self.secrets.get)
        fields = await self._cpu(self._decrypt, cipher, outer, body)
        parsed = parse_embeddings_fields(fields, model.id, model, echo=False)
        _check_served_dimensions(parsed.dimensions, model)
        counts = await self._cpu(self.engine.count_tokens, parsed.texts)
        total = check_token_counts(counts, model)
        rate_headers = self._admit(request, total, arrived)
        vectors = await self.runtime.batcher.embed(parsed.texts, counts)
        vectors = reduce_dimensions(vectors, parsed.dimensions, model)
        payload = await self._cpu(
            self._encode,
            cipher,
            vectors,
            model.id,
            parsed.encoding_format,
            total,
        )
        return _json_response(payload, headers=rate_headers)

    def _admit(self, request: Request, tokens: int, arrived: float) -> dict[str, str] | None:
        if self.rate_limiter is None:
            return None
        header = request.headers.get("authorization", "")
        key = header.partition(" ")[2].strip() or None
        return self.rate_limiter.admit(key, tokens, arrived=arrived)

    def _decrypt(self, cipher: ResponseCipher, outer: Mapping[str, Any], body: bytes) -> Any:
        if all(key in EMBEDDINGS_REQUEST_PLAIN_FIELDS for key in outer):
            return {}  # nothing to decrypt; the validation says what is missing
        try:
            plain = cipher.decrypt_request(body, EMBEDDINGS_REQUEST_PLAIN_FIELDS)
        except UnknownSecretError as exc:
            raise ApiError(
                500,
                f"{exc}: the secret expired or this backend restarted; exchange a new secret "
                "at /privatemode/v1/secret",
                type=SERVER,
                code="unknown_secret",
            ) from None
        except FieldCipherError as exc:
            raise ApiError(
                400,
                f"unencrypted or malformed encrypted field: {exc}; every field except 'model' "
                "must be encrypted with the exchanged secret (Privatemode protocol)",
                code="invalid_encrypted_field",
            ) from None
        return parse_json_object(plain, what="decrypted request")

    @staticmethod
    def _encode(
        cipher: ResponseCipher,
        vectors: np.ndarray[Any, np.dtype[np.float32]],
        model_id: str,
        encoding_format: EncodingFormat,
        prompt_tokens: int,
    ) -> bytes:
        body = embeddings_response_body(
            vectors,
            model_id=model_id,
            encoding_format=encoding_format,
            prompt_tokens=prompt_tokens,
            response_id=f"embd-{uuid.uuid4().hex}",
        )
        return cipher.encrypt_response(body, EMBEDDINGS_RESPONSE_PLAIN_FIELDS)

    async def list_models(self, request: Request) -> Response:
        self._authorize(request)
        return _json_response(
            {"object": "list", "data": [self._model_entry(m) for m in self.models.values()]},
            headers=_UNENCRYPTED,
        )

    async def retrieve_model(self, request: Request) -> Response:
        self._authorize(request)
        model = check_model({"model": request.path_params["model"]}, self.models)
        return _json_response(self._model_entry(model), headers=_UNENCRYPTED)

    def _model_entry(self, model: ModelInfo) -> dict[str, Any]:
        return {
            "id": model.id,
            "object": "model",
            "created": self.created,
            "owned_by": model.owned_by,
            "tasks": list(model.tasks),
        }

    async def health(self, request: Request) -> Response:
        return _json_response({"status": "ok", "model": self.model.id})


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler) -> Handler:
    """Turn refusals into OpenAI-shaped errors and anything unexpected into a 500 of that shape."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except BackendStopping:
            logger.debug("%s %s: the backend is stopping", request.method, request.url.path)
            return _error_response(
                ApiError(503, "the local backend is stopping", type=SERVER, code="stopping")
            )
        except ApiError as error:
            if error.status_code >= 500:
                logger.warning("%s %s -> %d", request.method, request.url.path, error.status_code)
            return _error_response(error)
        except Exception as exc:
            # Type only: the message of an unexpected error could quote a request.
            logger.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
            return _error_response(
                ApiError(500, "internal error in the local backend", type=SERVER, code=None)
            )

    return guarded


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = ApiError(
            404, f"no such endpoint: {request.url.path}", type=NOT_FOUND, code="unknown_url"
        )
    elif exc.status_code == 405:
        error = ApiError(
            405,
            f"method {request.method} is not allowed on {request.url.path}",
            code="method_not_allowed",
        )
    else:
        error = ApiError(exc.status_code, str(exc.detail), code=None)
    return _error_response(error)


def create_app(
    identity: LocalIdentity,
    engine: EmbeddingEngine,
    *,
    api_key: str | None = None,
    secret_ttl: float | timedelta = DEFAULT_SECRET_TTL,
    clock: Clock = time.monotonic,
    request_log: RequestLog | None = None,
    limits: BackendLimits | None = None,
    api_keys: Collection[str] = (),
    model_info: ModelInfo | None = None,
) -> Starlette:
    """The local backend as an ASGI app (run it with a lifespan: it starts the engine worker).

    With `api_key` and/or `api_keys` set, every endpoint but `/healthz` wants one of those keys
    as `Authorization: Bearer <key>` and answers 401 otherwise, as the real service does.
    `model_info` serves the engine's model under another catalogue entry: its id, and with
    `served_dimensions` only those Matryoshka sizes (400 for any other, as the service's vLLM).

    `app.state.secrets` is its `SecretStore`, `app.state.request_log` its `RequestLog` and
    `app.state.backend` the handlers' shared state.
    """
    secrets = SecretStore(secret_ttl, clock=clock)
    log = request_log if request_log is not None else RequestLog()
    keys = {*api_keys, *([api_key] if api_key else [])}
    backend = _Backend(
        identity,
        engine,
        api_keys=keys,
        secrets=secrets,
        limits=limits or BackendLimits(),
        model_info=model_info,
    )
    routes = [
        Route(ATTEST_PATH, _guarded(backend.attest), methods=["POST"]),
        Route(SECRET_PATH, _guarded(backend.secret), methods=["POST"]),
        Route(EMBEDDINGS_PATH, _guarded(backend.embeddings), methods=["POST"]),
        Route(MODELS_PATH, _guarded(backend.list_models), methods=["GET"]),
        Route(MODELS_PATH + "/{model:path}", _guarded(backend.retrieve_model), methods=["GET"]),
        Route(HEALTH_PATH, _guarded(backend.health), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestLogMiddleware, log=log)],
        exception_handlers={HTTPException: _http_exception},
        lifespan=backend.lifespan,
    )
    app.state.backend = backend
    app.state.secrets = secrets
    app.state.request_log = log
    return app


class LocalBackend:
    """The local backend served in-process on `host:port` (a free port by default).

    Every `start()` serves a fresh app, so secrets do not survive `stop()` — as with a real
    backend restart, clients then get `no secret for ID`. After the first start the port is kept,
    so a restarted backend has the same `.url`.
    """

    def __init__(
        self,
        workspace: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        engine: EmbeddingEngine | None = None,
        secret_ttl: float | timedelta = DEFAULT_SECRET_TTL,
        clock: Clock = time.monotonic,
        identity: LocalIdentity | None = None,
        limits: BackendLimits | None = None,
        api_keys: Collection[str] = (),
        model_info: ModelInfo | None = None,
        tee: str = "snp",
    ) -> None:
        """`api_key`/`api_keys`: the keys it accepts (any of them); none set: no key wanted.
        `model_info`: the catalogue entry to serve the engine's model under (see `create_app`).
        `tee`: the evidence it issues, ``snp`` (AMD SEV-SNP) or ``tdx`` (Intel TDX).
        """
        self.workspace = Path(workspace)
        self.identity = (
            identity
            if identity is not None
            else LocalIdentity.load_or_create(self.workspace, tee=tee)
        )
        self.engine = engine if engine is not None else load_default_engine()
        self.host = host
        self._port = port
        self._api_key = api_key
        self._api_keys = tuple(api_keys)
        self._model_info = model_info
        self._secret_ttl = secret_ttl
        self._clock = clock
        self._limits = limits
        self.request_log = RequestLog()
        self._app: Starlette | None = None
        self._server: ServerThread | None = None

    def __repr__(self) -> str:
        state = self.url if self._server is not None else "stopped"
        return f"LocalBackend({state}, workspace={str(self.workspace)!r})"

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the local backend is not running; call start()")
        return self._server.url

    @property
    def root_pem_path(self) -> Path:
        """The trust root (the local ASK and 'ARK') a client must trust to accept this backend."""
        return self.identity.root_pem_path

    @property
    def manifest_path(self) -> Path:
        """The manifest a client pins."""
        return self.identity.manifest_path

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    @property
    def secret_store(self) -> SecretStore:
        """The running app's secrets (tests use it to simulate a forgetful worker)."""
        if self._app is None:
            raise RuntimeError("the local backend is not running; call start()")
        store = self._app.state.secrets
        assert isinstance(store, SecretStore)
        return store

    @property
    def batcher_stats(self) -> BatcherStats:
        if self._app is None:
            raise RuntimeError("the local backend is not running; call start()")
        backend = self._app.state.backend
        assert isinstance(backend, _Backend)
        return backend.runtime.batcher.stats

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The running app's rate limiter (its `stats` count admitted and refused requests)."""
        if self._app is None:
            raise RuntimeError("the local backend is not running; call start()")
        backend = self._app.state.backend
        assert isinstance(backend, _Backend)
        return backend.rate_limiter

    def start(self) -> LocalBackend:
        if self._server is not None:
            return self
        app = create_app(
            self.identity,
            self.engine,
            api_key=self._api_key,
            secret_ttl=self._secret_ttl,
            clock=self._clock,
            request_log=self.request_log,
            limits=self._limits,
            api_keys=self._api_keys,
            model_info=self._model_info,
        )
        server = ServerThread(app, host=self.host, port=self._port)
        server.start()
        self._port = server.port
        self._app, self._server = app, server
        return self

    def set_api_keys(self, keys: Collection[str]) -> None:
        """Change the accepted keys while running (revoke one, as the real service can)."""
        self._api_keys = tuple(keys)
        self._api_key = None
        if self._app is not None:
            backend = self._app.state.backend
            assert isinstance(backend, _Backend)
            backend.set_api_keys(self._api_keys)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stop()
        self._server = None
        self._app = None

    def __enter__(self) -> LocalBackend:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_local_backend(
    host: str,
    port: int,
    workspace: Path | str,
    *,
    api_key: str | None = None,
    log_level: str = "info",
    tee: str = "snp",
) -> None:
    """Serve the local backend in the foreground until interrupted (the CLI's `local-backend`).

    On first start this creates the backend's certificate chain in `workspace` and writes
    `root.pem` and `manifest.json` there; it prints where it listens and where those files are.
    """
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    identity = LocalIdentity.load_or_create(workspace, tee=tee)
    engine = load_default_engine()
    app = create_app(identity, engine, api_key=api_key)
    # Bind first, so the address printed is the one served (port 0 picks a free port).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections made once the lines below are printed wait, not fail
    bound_port = int(sock.getsockname()[1])
    shown_host = f"[{host}]" if family == socket.AF_INET6 else host
    print(
        f"Privatemode local backend ({engine.model_id}) listening on http://{shown_host}:{bound_port}"
    )
    print(f"  trust root (local AMD-like root): {workspace / 'root.pem'}")
    print(f"  manifest to pin:                  {workspace / 'manifest.json'}")
    if identity.tdx is not None:
        print(f"  TDX evidence; Intel-like root:    {identity.tdx_root_pem_path}")
    print(f"  API key: {'required' if api_key else 'none'}; press Ctrl-C to stop", flush=True)
    config = uvicorn.Config(
        app, host=host, port=bound_port, log_level=log_level, access_log=False, lifespan="on"
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
