"""The OpenAI-compatible server: validation, batching limits, dimensions, encodings, errors.

`create_proxy_app(config)` returns a FastAPI app that serves `POST /v1/embeddings`,
`GET /v1/models`, `GET /healthz` and a status page at `GET /`. Every embeddings request is checked
against the model catalogue before anything goes upstream, split into sub-requests that fit the
model's per-request limits, sent through the attested `UpstreamSession`, and merged back in order.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from privatemode_proxy import __version__
from privatemode_proxy._admission import (
    Admission,
    AdmissionLimits,
    Refused,
    unless_disconnected,
)
from privatemode_proxy._apikey import key_forms, redact
from privatemode_proxy._batching import (
    BatchLimits,
    TokenCounter,
    default_token_counters,
    input_byte_bound,
    plan_tokens,
    split_batches,
)
from privatemode_proxy._catalogue import CATALOGUE, ModelInfo
from privatemode_proxy._coalescing import Coalescer, CoalescingConfig, PackAnswer
from privatemode_proxy._exceptions import UpstreamError
from privatemode_proxy._guard import BrowserGuard, BrowserPolicy, RequestLog
from privatemode_proxy._keymodes import ApiKey
from privatemode_proxy._memory import MemoryTrimmer
from privatemode_proxy._pacing import (
    Pacer,
    PacingContext,
    PacingRefused,
    RateLimits,
    client_patience,
    fit_ranges_to_budget,
    paced_send,
)
from privatemode_proxy._session import (
    SessionConfig,
    UpstreamResponse,
    UpstreamSession,
    model_name_problem,
)
from privatemode_proxy._token_estimate import TokenEstimator
from privatemode_proxy.openai import (
    ApiError,
    EmbeddingsRequest,
    FloatMatrix,
    VectorFormatError,
    decode_embeddings,
    encode_embeddings,
    error_body,
    error_type_for_status,
    parse_embeddings_fields,
    parse_json_object,
    parse_model,
    reduce_dimensions,
    too_long_error,
)

logger = logging.getLogger(__name__)

_JSON = "application/json"
DEFAULT_MAX_CLIENT_INPUTS = 8192
"""Four times OpenAI's 2,048 inputs per request: enough for any client that batches, and an
answer of bounded size (8,192 x 2,560 float32 is 84 MB of vectors)."""
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_INPUT_LIMIT_HOLDER = "this proxy (--maxClientInputs; it splits them for the model itself)"


@dataclass(frozen=True)
class ProxyConfig:
    """Everything `create_proxy_app` needs."""

    session: SessionConfig
    limits: BatchLimits = field(default_factory=BatchLimits)
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    """Requests worked on and waiting at once, body size and body timeout."""
    browser: BrowserPolicy = field(default_factory=BrowserPolicy)
    """`Host` names and browser origins accepted (none but IP literals and localhost)."""
    max_client_inputs: int = DEFAULT_MAX_CLIENT_INPUTS
    """Inputs one client request may carry (400 past it); the proxy splits them upstream."""
    local_mode: bool = False
    """Shown on the status page: the upstream is the bundled local backend, not Privatemode."""
    token_counters: Mapping[str, TokenCounter] | None = None
    """Exact token counters by model id, over the ones we ship (the local model's)."""
    catalogue: Mapping[str, ModelInfo] = field(default_factory=lambda: dict(CATALOGUE))
    rate_limits: RateLimits | None = None
    """Pacing per upstream API key (see `_pacing`); None: requests go out as they come."""
    coalescing: CoalescingConfig | None = None
    """Packing of small requests into one upstream request (see `_coalescing`); None: off."""


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


def parse_embeddings_request(
    raw: bytes, *, max_inputs: int = DEFAULT_MAX_CLIENT_INPUTS
) -> EmbeddingsRequest:
    """Validate the body of `POST /v1/embeddings`; raises `ApiError` (400) with what to change."""
    body = parse_json_object(raw)
    model = parse_model(body.get("model"))
    problem = model_name_problem(model)
    if problem is not None:  # it becomes a header value upstream
        raise ApiError(400, problem, param="model", code="invalid_model")
    return parse_embeddings_fields(body, model, max_inputs=max_inputs, holder=_INPUT_LIMIT_HOLDER)


@dataclass
class _SubResult:
    vectors: FloatMatrix
    model: str | None
    prompt_tokens: int | None
    total_tokens: int | None
    usage: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    """The answer's other top-level fields (`id`, `created`, anything new), kept as they came."""


class UpstreamHealth:
    """What the proxy last saw of the upstream's inference endpoint (for /healthz and /)."""

    def __init__(self) -> None:
        self.last_answer_at: datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None

    def answered(self, status_code: int) -> None:
        if status_code >= 500:
            self.failed(f"upstream answered HTTP {status_code}")
        else:
            self.last_answer_at = datetime.now(UTC)

    def failed(self, message: str) -> None:
        self.last_error, self.last_error_at = message, datetime.now(UTC)

    @property
    def failing(self) -> bool:
        """The upstream's last word was an error (unreachable, timed out, 5xx)."""
        if self.last_error_at is None:
            return False
        return self.last_answer_at is None or self.last_error_at > self.last_answer_at


class EmbeddingsService:
    """Serves one validated embeddings request: split, send, check, merge."""

    def __init__(self, config: ProxyConfig, session: UpstreamSession) -> None:
        self.config = config
        self.session = session
        self.health = UpstreamHealth()
        self._counters: dict[str, TokenCounter] = {
            **default_token_counters(),
            **(config.token_counters or {}),
        }
        limits = config.rate_limits
        self.pacer = Pacer(limits) if limits is not None and limits.enabled else None
        self.estimator = TokenEstimator(self._counters)
        self.trimmer = MemoryTrimmer()

    def pacing_for(self, key_label: str, headers: Mapping[str, str]) -> PacingContext | None:
        """The pacing of a request arriving now for the key named `key_label` (never the key)."""
        if self.pacer is None:
            return None
        patience = client_patience(headers, self.pacer.limits.default_wait_seconds)
        return PacingContext(self.pacer.for_key(key_label), time.monotonic() + patience)

    async def embed(
        self,
        req: EmbeddingsRequest,
        pacing: PacingContext | None = None,
        key: ApiKey | None = None,
    ) -> bytes:
        """The answer to `req`, served upstream with `key` (see `UpstreamSession.api_key_for`)."""
        info = self.config.catalogue.get(req.model)
        if info is not None and req.dimensions is not None:
            problem = info.check_dimensions(req.dimensions)
            if problem is not None:
                raise ApiError(400, problem, param="dimensions", code="invalid_dimensions")
        ranges, counts = await self._plan(info, req.texts)
        if pacing is not None:
            pacing, ranges = await self._pace(pacing, info, req.texts, ranges)
        semaphore = asyncio.Semaphore(self.config.limits.max_concurrent_subrequests)
        started = time.perf_counter()
        results = await self._run_all(req, ranges, semaphore, pacing, info, key)
        if len(results) == 1:
            vectors = results[0].vectors
        else:
            vectors = np.concatenate([r.vectors for r in results])
        vectors = self._apply_dimensions(info, req, vectors)
        logger.debug(
            "embedded %d inputs in %d sub-request(s) in %.3f s",
            len(req.texts),
            len(ranges),
            time.perf_counter() - started,
        )
        prompt = _sum_usage([r.prompt_tokens for r in results], counts)
        total = _sum_usage([r.total_tokens for r in results], counts)
        model = next((r.model for r in results if r.model), req.model)
        # Upstream's answer as it came (the official proxy passes it through): a split request's
        # answer has the first sub-request's `id` and `created` and the sum of every `usage`.
        first = results[0].fields
        body = {
            **({"id": first["id"]} if "id" in first else {}),
            "object": "list",
            **({"created": first["created"]} if "created" in first else {}),
            "model": model,
            "data": encode_embeddings(vectors, req.encoding_format),
            "usage": {
                **_merge_usage([r.usage for r in results]),
                "prompt_tokens": prompt,
                "total_tokens": total,
            },
            **{k: v for k, v in first.items() if k not in ("id", "created")},
        }
        answer = orjson.dumps(body, option=_NUMPY)
        self.trimmer.answered(len(answer))
        return answer

    async def _plan(
        self, info: ModelInfo | None, texts: list[str]
    ) -> tuple[list[tuple[int, int]], list[int] | None]:
        """Sub-request ranges and (for known models) the token counts they were cut by."""
        if info is None:
            # Unknown to the catalogue: no limits to apply; upstream decides (and may say 404).
            return [(0, len(texts))], None
        limits = self.config.limits
        max_tokens = limits.tokens_for(info)
        # Counting is bounded (inputs over the byte bound are never tokenized) but may still
        # take a while for many long inputs: never on the event loop, except for tiny requests.
        if len(texts) > 8 or sum(map(len, texts)) > 4096:
            plan = await asyncio.to_thread(plan_tokens, info, texts, max_tokens, self._counters)
        else:
            plan = plan_tokens(info, texts, max_tokens, self._counters)
        if plan.too_large:
            i, size = plan.too_large[0]
            n_large = len(plan.too_large)
            more = f" ({n_large} inputs are too long)" if n_large > 1 else ""
            raise ApiError(
                400,
                f"input {i} is {size} bytes long; model '{info.id}' accepts at most "
                f"{info.max_tokens_per_input} tokens per input, and no text over "
                f"{input_byte_bound(info)} bytes fits that{more}. Shorten or split it.",
                param="input",
                code="context_length_exceeded",
                input_index=i,
            )
        if plan.too_long:
            raise too_long_error(info, plan.too_long)
        counts = plan.counts
        ranges = split_batches(counts, max_inputs=limits.inputs_for(info), max_tokens=max_tokens)
        return ranges, counts

    async def _pace(
        self,
        pacing: PacingContext,
        info: ModelInfo | None,
        texts: list[str],
        ranges: list[tuple[int, int]],
    ) -> tuple[PacingContext, list[tuple[int, int]]]:
        """Token estimates, ranges that fit one window, and a refusal now if they can't start
        before the client gives up."""
        if len(texts) > 64:
            estimates = await asyncio.to_thread(self.estimator.counts, info, texts)
        else:
            estimates = self.estimator.counts(info, texts)
        ranges = fit_ranges_to_budget(ranges, estimates, pacing.pacer.token_budget)
        pacing = PacingContext(pacing.pacer, pacing.deadline, estimates)
        pacing.check_fits(ranges)
        return pacing, ranges

    async def _run_all(
        self,
        req: EmbeddingsRequest,
        ranges: list[tuple[int, int]],
        semaphore: asyncio.Semaphore,
        pacing: PacingContext | None = None,
        info: ModelInfo | None = None,
        key: ApiKey | None = None,
    ) -> list[_SubResult]:
        if len(ranges) == 1:
            return [await self._run_one(req, ranges[0], 0, 1, semaphore, pacing, info, key)]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        self._run_one(req, rng, k, len(ranges), semaphore, pacing, info, key)
                    )
                    for k, rng in enumerate(ranges)
                ]
        except BaseExceptionGroup as eg:
            # The first failure cancelled the others; answer with it (never a partial result).
            first = _first_leaf(eg)
            raise first from None
        return [t.result() for t in tasks]

    async def _run_one(
        self,
        req: EmbeddingsRequest,
        rng: tuple[int, int],
        k: int,
        n: int,
        semaphore: asyncio.Semaphore,
        pacing: PacingContext | None = None,
        info: ModelInfo | None = None,
        key: ApiKey | None = None,
    ) -> _SubResult:
        start, end = rng
        body: dict[str, Any] = {"model": req.model, "input": req.texts[start:end]}
        body.update(req.passthrough)
        body["encoding_format"] = "base64"  # a quarter of the bytes of float text, exact
        # Only sizes the upstream serves; a size between is truncated here (`_apply_dimensions`).
        asked = info.upstream_dimensions(req.dimensions) if info is not None else req.dimensions
        if asked is not None:
            body["dimensions"] = asked
        where = f" (sub-request {k + 1} of {n}, inputs {start}..{end - 1})" if n > 1 else ""
        async with semaphore:
            try:
                if pacing is None:
                    answer = await self.session.post_embeddings(body, key)
                else:
                    estimate = pacing.tokens(start, end)
                    answer, reported = await paced_send(
                        pacing.pacer,
                        estimate,
                        pacing.deadline,
                        lambda: self.session.post_embeddings(body, key),
                    )
                    self.estimator.observe(info, estimate, reported)
            except UpstreamError as exc:
                self.health.failed(f"{exc}{where}")
                raise ApiError(
                    exc.status_code, f"{exc}{where}", type=exc.type, code=exc.code
                ) from None
        self.health.answered(answer.status_code)
        if not answer.is_success:
            raise _upstream_error(answer, where)
        try:
            vectors = decode_embeddings(answer.body.get("data"), end - start)
        except VectorFormatError as exc:
            raise ApiError(
                502, f"upstream answer unusable{where}: {exc}", type="upstream_error"
            ) from None
        usage = answer.body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        model = answer.body.get("model")
        return _SubResult(
            vectors,
            model if isinstance(model, str) else None,
            _int_or_none(usage.get("prompt_tokens")),
            _int_or_none(usage.get("total_tokens")),
            usage,
            {k: v for k, v in answer.body.items() if k not in _REBUILT_FIELDS},
        )

    def _apply_dimensions(
        self, info: ModelInfo | None, req: EmbeddingsRequest, vectors: FloatMatrix
    ) -> FloatMatrix:
        if info is None:
            return vectors
        expected = req.dimensions if req.dimensions is not None else info.native_dimensions
        got = int(vectors.shape[1])
        if got == expected:
            return vectors
        if info.matryoshka and req.dimensions is not None and got > expected:
            # Upstream served a larger size (the next it serves, or the native one): a
            # Matryoshka model's reduced vector is the leading slice of it, re-normalised.
            return reduce_dimensions(vectors, expected)
        raise ApiError(
            502,
            f"upstream returned vectors of length {got}; expected {expected} for model '{info.id}'",
            type="upstream_error",
            code="unexpected_dimensions",
        )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_REBUILT_FIELDS = frozenset({"object", "model", "data", "usage"})
"""Top-level answer fields the proxy writes itself; every other one is passed on."""


def _merge_usage(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """The `usage` of a split request: numbers summed (nested ones such as
    `prompt_tokens_details.cached_tokens` too), anything else as the first answer has it."""
    merged: dict[str, Any] = {}
    for usage in usages:
        for name, value in usage.items():
            if name not in merged:
                merged[name] = dict(value) if isinstance(value, dict) else value
                continue
            have = merged[name]
            if _int_or_none(value) is not None and _int_or_none(have) is not None:
                merged[name] = have + value
            elif isinstance(value, dict) and isinstance(have, dict):
                merged[name] = _merge_usage([have, value])
    return merged


def _sum_usage(values: list[int | None], counts: list[int] | None) -> int:
    if all(v is not None for v in values):
        return sum(v for v in values if v is not None)
    return sum(counts) if counts is not None else sum(v or 0 for v in values)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _upstream_error(answer: UpstreamResponse, where: str) -> ApiError:
    """An upstream error answer, passed through as the official proxy does: its status, its
    (decrypted) body and its rate-limit headers. Only a split request's sub-request is named in
    the message, so the app knows which inputs it concerns."""
    body = dict(answer.body)
    err = body.get("error")
    err = dict(err) if isinstance(err, dict) else {}
    message = str(err.get("message") or "upstream error")
    if where:
        err["message"] = message + where
        body["error"] = err
    return ApiError(
        answer.status_code,
        message + where,
        type=str(err.get("type") or error_type_for_status(answer.status_code)),
        param=err.get("param") if isinstance(err.get("param"), str) else None,
        code=err.get("code") if isinstance(err.get("code"), str) else None,
        headers=answer.headers,
        passthrough=body,
    )


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
            raise ApiError(
                exc.status_code, str(exc), type=exc.type, code=exc.code
            ) from None
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
        return HTMLResponse(_status_html(status))

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
            _int_or_none(usage.get("prompt_tokens")),
            _int_or_none(usage.get("total_tokens")),
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


def _filled_model_list(
    content: bytes, catalogue: Mapping[str, ModelInfo]
) -> dict[str, Any] | None:
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


def _rate_limit_text(paced: dict[str, Any]) -> str:
    parts = []
    if paced.get("requests_limit") is not None:
        parts.append(f"{paced['requests_in_window']}/{paced['requests_limit']} requests")
    if paced.get("tokens_limit") is not None:
        parts.append(f"{paced['tokens_in_window']}/{paced['tokens_limit']} tokens")
    return (
        f"{', '.join(parts)} in the last {paced['window_seconds']:g} s; "
        f"{paced['queued']} waiting"
    )


def _status_html(status: dict[str, Any]) -> str:
    esc = html.escape
    rows: list[tuple[str, str]] = [
        ("Upstream", f"{status['upstream']} ({status.get('state')})"),
        ("Last upstream answer", str(status.get("last_upstream_answer_at") or "none yet")),
        (
            "Requests",
            f"{status.get('requests_in_progress', 0)} in progress, "
            f"{status.get('requests_waiting', 0)} waiting",
        ),
    ]
    att = status.get("attestation")
    if isinstance(att, dict):
        for key in (
            "tee",
            "product",
            "measurement",
            "measurements",
            "reported_tcb",
            "manifest_sha256",
            "verified_at",
        ):
            if key in att:
                value = att[key]
                text = (
                    ", ".join(f"{k}={v}" for k, v in value.items())
                    if isinstance(value, dict)
                    else str(value)
                )
                label = "TEE" if key == "tee" else key.replace("_", " ").capitalize()
                rows.append((label, text))
    else:
        rows.append(("Attestation", "not yet verified"))
    secret = status.get("secret")
    if isinstance(secret, dict):
        rows.append(("Secret obtained", str(secret["obtained_at"])))
        rows.append(("Secret used until", str(secret["use_until"])))
    else:
        rows.append(("Secret", "none yet"))
    if status.get("last_error"):
        rows.append(("Last error", str(status["last_error"])))
    for paced in status.get("rate_limits") or []:
        rows.append((f"Rate limit ({paced['key']})", _rate_limit_text(paced)))
    banner = (
        "<p><strong>LOCAL MODE</strong>: the upstream is the bundled local backend, whose "
        "self-made root is trusted. This is not Privatemode's service.</p>"
        if status.get("local_mode")
        else ""
    )
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    ready = "ready" if status.get("ready") else "not ready"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>privatemode-proxy</title>"
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}"
        "td{font-family:monospace}</style></head><body>"
        f"<h1>privatemode-proxy {esc(str(status.get('version')))}: {ready}</h1>{banner}"
        f"<table>{table}</table><p><a href='/?format=json'>JSON</a></p></body></html>"
    )
