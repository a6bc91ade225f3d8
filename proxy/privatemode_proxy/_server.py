"""The OpenAI-compatible app: routes, admission, browser guard, errors in OpenAI's shape.

`create_proxy_app(config)` returns a FastAPI app that serves `POST /v1/embeddings` (through
`_service.EmbeddingsService`, or the coalescer), `GET /v1/models`, `GET /healthz` and a status
page at `GET /` (`_status_page`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from privatemode_proxy import __version__
from privatemode_proxy._admission import (
    Admission,
    Refused,
    unless_disconnected,
)
from privatemode_proxy._apikey import key_forms, redact
from privatemode_proxy._catalogue import ModelInfo
from privatemode_proxy._coalescing import Coalescer, PackAnswer
from privatemode_proxy._exceptions import UpstreamError
from privatemode_proxy._guard import BrowserGuard, RequestLog
from privatemode_proxy._keymodes import ApiKey
from privatemode_proxy._pacing import (
    PacingContext,
    PacingRefused,
)
from privatemode_proxy._service import (
    EmbeddingsService,
    ProxyConfig,
    int_or_none,
    parse_embeddings_request,
)
from privatemode_proxy._session import (
    UpstreamSession,
)
from privatemode_proxy._status_page import status_html
from privatemode_proxy.openai import (
    ApiError,
    EmbeddingsRequest,
    decode_embeddings,
    encode_embeddings,
    error_body,
)

logger = logging.getLogger(__name__)

_JSON = "application/json"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def error_response(
    status_code: int,
    message: str,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = error_body(message, type=error_type, param=param, code=code)
    return Response(orjson.dumps(body), status_code, headers=dict(headers or {}), media_type=_JSON)


# -- the app -----------------------------------------------------------------------------------


def create_proxy_app(config: ProxyConfig) -> FastAPI:
    """The proxy as an ASGI app; the upstream session lives on the app's event loop."""
    session = UpstreamSession(config.session)
    service = EmbeddingsService(config, session)
    coalescer = Coalescer(config.coalescing) if config.coalescing is not None else None
    admission = Admission(config.admission)
    key_texts = key_forms(config.session.api_key)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await session.start()
        if config.local_mode:
            logger.warning(
                "LOCAL MODE: upstream is the bundled local backend at %s; its self-made root "
                "is trusted. Not Privatemode's service, no confidential-computing hardware.",
                config.session.api_url,
            )
        try:
            yield
        finally:
            service.trimmer.close()
            await session.aclose()

    app = FastAPI(
        title="privatemode-proxy",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.session = session
    app.state.config = config
    app.state.admission = admission
    app.state.health = service.health
    app.add_middleware(BrowserGuard, policy=config.browser)
    app.add_middleware(RequestLog)  # outermost: refusals by the guard are logged too

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        if key_texts:  # belt and braces: no message ever shows the API key
            exc.message = redact(exc.message, key_texts)
        return Response(exc.body_bytes(), exc.status_code, headers=exc.headers, media_type=_JSON)

    @app.exception_handler(Refused)
    async def _refused(_request: Request, exc: Refused) -> Response:
        return error_response(exc.status, exc.message, exc.error_type, None, exc.code, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), error_type)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, "invalid request")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        # Only the type: an exception's text could quote request content.
        logger.error("internal error: %s", type(exc).__name__)
        return error_response(500, "internal error in the proxy", "server_error")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        # Admitted before the body is read: waiting requests hold no body in memory.
        async with admission.slot() as slot:
            raw = await admission.read_body(request, slot)
            req = parse_embeddings_request(raw, max_inputs=config.max_client_inputs)
            del raw
            request.state.inputs = len(req.texts)
            key = session.api_key_for(request.headers.get("authorization"))
            pacing = service.pacing_for(_key_label(key), request.headers)
            if coalescer is not None and coalescer.accepts(len(req.texts)):
                work = _embed_coalesced(service, coalescer, req, key, pacing)
            else:
                work = service.embed(req, pacing, key)
            # A client that goes away cancels its outstanding sub-requests: no quota is spent
            # for nobody.
            try:
                answer = await unless_disconnected(request.receive, work)
            except Refused:
                logger.info("client went away: cancelled its request of %d inputs", len(req.texts))
                raise
            except PacingRefused as exc:
                raise ApiError(
                    429,
                    str(exc),
                    type="rate_limit_error",
                    code="rate_limit_exceeded",
                    headers=exc.headers(),
                ) from None
            tokens = _prompt_tokens(answer)
            if tokens is not None:
                request.state.tokens = tokens
            return Response(answer, media_type=_JSON)

    async def upstream_models(request: Request) -> tuple[dict[str, Any] | None, Response]:
        """Upstream's model list (what it serves), catalogue-filled; or the error answer."""
        try:
            key = session.api_key_for(request.headers.get("authorization"))
            status, content = await session.get_models(key)
        except UpstreamError as exc:
            raise ApiError(exc.status_code, str(exc), type=exc.type, code=exc.code) from None
        if status != 200:
            return None, _upstream_models_error(status, content)
        body = _filled_model_list(content, config.catalogue)
        if body is None:  # not a list we understand: passed on as it came
            return None, Response(content, media_type=_JSON)
        return body, Response(orjson.dumps(body), media_type=_JSON)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        return (await upstream_models(request))[1]

    @app.get("/v1/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> Response:
        # From upstream's list (the official proxy serves only the list).
        body, answer = await upstream_models(request)
        if body is None:
            return answer
        for entry in body["data"]:
            if isinstance(entry, dict) and entry.get("id") == model_id:
                return Response(orjson.dumps(entry), media_type=_JSON)
        raise ApiError(
            404,
            f"the model '{model_id}' is not served by {config.session.api_url}; "
            "GET /v1/models lists the models it serves",
            type="invalid_request_error",
            param="model",
            code="model_not_found",
        )

    def upstream_status() -> dict[str, Any]:
        """The session's state and what the last requests saw; the key redacted everywhere."""
        status = session.status()
        health = service.health
        if status["ready"]:
            state = "failing" if health.failing else "ready"
        else:
            state = "failed" if status["last_error"] else "pending"
        last_error, last_error_at = status["last_error"], status["last_error_at"]
        if health.last_error_at is not None and (
            last_error_at is None or health.last_error_at.isoformat() > last_error_at
        ):
            last_error, last_error_at = health.last_error, health.last_error_at.isoformat()
        if last_error and key_texts:
            last_error = redact(str(last_error), key_texts)
        answered = health.last_answer_at
        status.update(
            state=state,
            last_error=last_error,
            last_error_at=last_error_at,
            last_upstream_answer_at=answered.isoformat() if answered else None,
            upstream_timeout_seconds=config.session.timeout_seconds,
            requests_in_progress=admission.in_progress,
            requests_waiting=admission.waiting,
            requests_refused_overloaded=admission.refused,
        )
        return status

    @app.get("/healthz")
    async def healthz() -> Response:
        status = upstream_status()
        keys = (
            "last_error",
            "last_error_at",
            "last_upstream_answer_at",
            "requests_in_progress",
            "requests_waiting",
        )
        body = {"status": "ok", "upstream": status["state"], **{k: status[k] for k in keys}}
        if service.pacer is not None:
            body["rate_limits"] = service.pacer.status()
        return Response(orjson.dumps(body), media_type=_JSON)

    @app.get("/")
    async def status_page(request: Request) -> Response:
        status = upstream_status()
        status["local_mode"] = config.local_mode
        if service.pacer is not None:
            status["rate_limits"] = service.pacer.status()
        status["version"] = __version__
        wants_json = request.query_params.get("format") == "json" or (
            _JSON in request.headers.get("accept", "")
            and "text/html" not in request.headers.get("accept", "")
        )
        if wants_json:
            return Response(orjson.dumps(status), media_type=_JSON)
        return HTMLResponse(status_html(status))

    return app


# -- coalescing ----------------------------------------------------------------------------------


async def _embed_coalesced(
    service: EmbeddingsService,
    coalescer: Coalescer,
    req: EmbeddingsRequest,
    key: ApiKey | None,
    pacing: PacingContext | None,
) -> bytes:
    """Serve a small request as part of a pack (see `_coalescing`), validated on its own first."""
    info = service.config.catalogue.get(req.model)
    if info is not None and req.dimensions is not None:
        problem = info.check_dimensions(req.dimensions)
        if problem is not None:
            raise ApiError(400, problem, param="dimensions", code="invalid_dimensions")
    await service._plan(info, req.texts)  # refuses an input that is too long, before packing
    tokens = service.estimator.counts(info, req.texts)
    if pacing is not None:
        PacingContext(pacing.pacer, pacing.deadline, tokens).check_fits([(0, len(tokens))])
    limits = service.config.limits
    max_inputs = limits.inputs_for(info) if info is not None else 2048
    max_tokens = limits.tokens_for(info) if info is not None else 300_000
    if pacing is not None and pacing.pacer.token_budget is not None:
        max_tokens = min(max_tokens, pacing.pacer.token_budget)
    max_tokens = min(max_tokens, coalescer.config.max_tokens)
    if sum(tokens) > max_tokens // 2:  # fills a request well on its own
        return await service.embed(req, pacing, key)
    extra = orjson.dumps(req.passthrough, option=orjson.OPT_SORT_KEYS)
    pack_key = (_key_label(key), req.model, req.dimensions, extra)

    async def run(texts: list[str], deadline: float) -> PackAnswer:
        pack = EmbeddingsRequest(req.model, texts, "base64", req.dimensions, dict(req.passthrough))
        paced = PacingContext(pacing.pacer, deadline) if pacing is not None else None
        answer = orjson.loads(await service.embed(pack, paced, key))
        usage = answer.get("usage") or {}
        others = {k: v for k, v in answer.items() if k not in ("object", "data", "model", "usage")}
        return PackAnswer(
            decode_embeddings(answer["data"], len(texts)),
            int_or_none(usage.get("prompt_tokens")),
            int_or_none(usage.get("total_tokens")),
            str(answer.get("model") or req.model),
            others,
        )

    share = await coalescer.submit(
        pack_key,
        req.texts,
        tokens,
        deadline=pacing.deadline if pacing is not None else time.monotonic() + 600.0,
        run=run,
        is_input_error=lambda exc: isinstance(exc, ApiError) and exc.status_code in (400, 413),
        max_inputs=max_inputs,
        max_tokens=max_tokens,
        room_at=pacing.pacer.projected_start if pacing is not None else None,
    )
    body = {
        **share.extra,
        "object": "list",
        "data": encode_embeddings(share.vectors, req.encoding_format),
        "model": share.model,
        "usage": {"prompt_tokens": share.prompt_tokens, "total_tokens": share.total_tokens},
    }
    return orjson.dumps(body, option=_NUMPY)


def _key_label(key: ApiKey | None) -> str:
    """The name the pacing ledger and the status page use for the upstream key (not the key):
    each app key of a keyless proxy is paced on its own, as the service limits it."""
    if key is None:
        return "no key"
    return "proxy key" if key.source == "proxy" else key.id


def _prompt_tokens(answer: bytes) -> int | None:
    """`usage.prompt_tokens` of an answer this proxy built (usage comes after the vectors, so
    only the tail is read)."""
    at = answer.rfind(b'"prompt_tokens":')
    if at < 0:
        return None
    digits = answer[at + 16 : at + 40].split(b",")[0].split(b"}")[0].strip()
    return int(digits) if digits.isdigit() else None


def _upstream_models_error(status: int, content: bytes) -> Response:
    """An upstream error on /v1/models in OpenAI's shape (an upstream may answer plain text)."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return Response(content, status, media_type=_JSON)
    text = content[:300].decode("utf-8", errors="replace").strip()
    return error_response(
        status if 400 <= status < 600 else 502,
        f"upstream answered HTTP {status} to /v1/models" + (f": {text}" if text else ""),
        "upstream_error",
        code="upstream_error",
    )


def _filled_model_list(content: bytes, catalogue: Mapping[str, ModelInfo]) -> dict[str, Any] | None:
    """Upstream's model list as it came (what upstream serves, with its `tasks` and any other
    fields); the catalogue only fills `object`, `owned_by` and `tasks` where an entry of a
    model it knows lacks them. None when `content` is not an OpenAI model list."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    for entry in data:
        info = catalogue.get(str(entry.get("id"))) if isinstance(entry, dict) else None
        if info is None:
            continue
        assert isinstance(entry, dict)
        entry.setdefault("object", "model")
        entry.setdefault("owned_by", info.owned_by)
        entry.setdefault("tasks", list(info.tasks))
    return dict(body)
