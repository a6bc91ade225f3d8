"""The proxy's embeddings service: one validated request split, sent, checked and merged.

`parse_embeddings_request` checks a client's body with the wire layer's rules (`openai`) plus the
proxy's own (a model name that can be a header, at most `--maxClientInputs` inputs).
`EmbeddingsService.embed` checks the request against the model catalogue before anything goes
upstream, splits it into sub-requests that fit the model's per-request limits (and the pacing
budget), sends them through the attested `UpstreamSession`, and merges the answers back in order
(usage, dimensions, encoding). `ProxyConfig` is everything the service and the app are built from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from privatemode_proxy._admission import (
    AdmissionLimits,
)
from privatemode_proxy._batching import (
    BatchLimits,
    TokenCounter,
    default_token_counters,
    input_byte_bound,
    plan_tokens,
    split_batches,
)
from privatemode_proxy._catalogue import CATALOGUE, ModelInfo
from privatemode_proxy._coalescing import CoalescingConfig
from privatemode_proxy._exceptions import UpstreamError
from privatemode_proxy._guard import BrowserPolicy
from privatemode_proxy._keymodes import ApiKey
from privatemode_proxy._memory import MemoryTrimmer
from privatemode_proxy._pacing import (
    Pacer,
    PacingContext,
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
    error_type_for_status,
    parse_embeddings_fields,
    parse_json_object,
    parse_model,
    reduce_dimensions,
    too_long_error,
)

logger = logging.getLogger(__name__)

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
            int_or_none(usage.get("prompt_tokens")),
            int_or_none(usage.get("total_tokens")),
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


def int_or_none(value: Any) -> int | None:
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
            if int_or_none(value) is not None and int_or_none(have) is not None:
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
