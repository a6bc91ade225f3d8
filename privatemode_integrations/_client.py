"""The client core both framework classes share: batching, concurrency, retries, decoding.

It speaks plain OpenAI-compatible HTTP to the Privatemode proxy (`POST /v1/embeddings`,
`GET /v1/models`); the proxy does attestation and encryption. One `EmbeddingsClient` keeps one
pooled `httpx.Client` (and one `httpx.AsyncClient` per event loop) for all its calls.

Concurrency, sync: a thread pool of at most `max_concurrency` threads posting with the shared
`httpx.Client`. Chosen over an event loop in a worker thread because it works the same whether or
not the caller already runs an event loop (notebooks, LlamaIndex sync calls inside async apps),
honours a caller-supplied sync `httpx.Client`, and the work is I/O-bound (numpy decoding releases
the GIL). Async: tasks on the caller's loop. In both, a per-client semaphore bounds the requests
in flight across every concurrent call on the client, not only within one call.

Its length (~850 lines) is the sync and async twins of every call path (as in httpx and
langchain-openai); what they share (planning, answer checks, errors) is written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import queue
import re
import ssl
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import orjson
from privatemode_proxy import openai as wire
from pydantic import SecretStr

# The plain console bar: tqdm.auto would need ipywidgets in Jupyter and warns without them.
from tqdm import tqdm

from privatemode_integrations import _settings
from privatemode_integrations._batching import (
    ModelLimits,
    catalogue_limits,
    limits_from_models_response,
    pack_batches,
)
from privatemode_integrations._errors import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    BadRequestError,
    InputTooLongError,
    PrivatemodeError,
    status_error_class,
)
from privatemode_integrations._retry import (
    RetryPolicy,
    is_retryable_exception,
    is_retryable_status,
    parse_retry_after,
    tls_failure,
)
from privatemode_integrations._throttle import Throttle
from privatemode_integrations._tokens import TokenCounter

__all__ = ["EmbeddingsClient", "Vectors"]

logger = logging.getLogger("privatemode_integrations")

Vectors = npt.NDArray[np.float32]
"""Embeddings as a float32 array of shape (number of inputs, dimensions), in input order."""

_USER_AGENT = "privatemode-integrations/0.1.0"
_INPUT_INDEX = re.compile(r"(input\s*\[\s*|input\.|input\s+(?:#|index\s*)?)(\d+)")
_TOKEN_LIMIT_WORDS = re.compile(r"token|too long|context length|max(imum)?[_ ]length", re.I)
_TOKEN_LIMIT_CODES = frozenset({"context_length_exceeded", "input_too_long", "too_many_tokens"})
_PROGRESS_STEPS = 50
"""While a progress bar is shown a call is cut into about this many requests, so the bar moves
smoothly and its ETA means something (one request may otherwise hold 2,048 texts)."""
_PROGRESS_MIN_INPUTS = 16
"""...but no request carries fewer inputs than this because of the bar."""
_SHOWN_INDICES = 10


class _Aborted(Exception):
    """Another batch of the same call failed; this one stops without sending more."""


def _rate_limited(response: httpx.Response | None) -> bool:
    return response is not None and response.status_code == 429


def _sleep_unless(abort: threading.Event | None, seconds: float) -> None:
    """Sleep, or raise `_Aborted` as soon as another batch of the call has failed."""
    if abort is None:
        time.sleep(seconds)
    elif abort.wait(seconds):
        raise _Aborted


@dataclasses.dataclass
class _LoopState:
    client: httpx.AsyncClient
    owns_client: bool
    slots: asyncio.Semaphore
    serial: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    """One request at a time on this loop while the throttle says so (after a 429)."""


def _as_secret(api_key: str | SecretStr | None) -> SecretStr | None:
    """The key without surrounding whitespace (a key file or secret often ends in a newline);
    `ValueError`, never quoting the key, when it has any other control or non-ASCII character."""
    if api_key is None:
        return None
    raw = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    key = raw.strip()
    bad = next((i for i, c in enumerate(key, 1) if not "\x21" <= c <= "\x7e"), None)
    if bad is not None:
        raise ValueError(
            f"the API key has a space, control or non-ASCII character at position {bad} of "
            f"{len(key)}; an API key is printable ASCII: check api_key / PRIVATEMODE_API_KEY"
        )
    return SecretStr(key) if key else None


def check_texts(texts: Sequence[str]) -> list[str]:
    """The inputs as a list, or a `TypeError` naming the first input that is not a string."""
    if isinstance(texts, str | bytes):
        raise TypeError(
            "texts must be a list of strings, not a single string; "
            "wrap it in a list or use embed_query"
        )
    items = list(texts)
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(
                f"input {index} is a {type(text).__name__}, not a str; "
                "pass text (token-ID arrays are not accepted)"
            )
    return items


def decode_embeddings(content: bytes, count: int, dimensions: int | None) -> Vectors:
    """Decode an OpenAI embeddings response carrying `count` vectors, in `index` order.

    Accepts base64 (little-endian float32, what we ask for) and float lists (a server that
    ignored `encoding_format`), with the proxy's own decoder (`privatemode_proxy.openai`).
    Anything missing, duplicated or inconsistent is an `APIResponseError`: a caller never gets a
    partial or misordered result.
    """
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise APIResponseError("embeddings response is not JSON") from None
    data = payload.get("data") if isinstance(payload, dict) else None
    try:
        return wire.decode_embeddings(data, count, dimensions)
    except wire.VectorFormatError as exc:
        raise APIResponseError(f"embeddings response unusable: {exc}") from None


def _shift_index(text: str, offset: int) -> tuple[str, int | None]:
    """Rewrite `input[k]` in a server message to the caller's index `k + offset`."""
    found: list[int] = []

    def replace(match: re.Match[str]) -> str:
        index = int(match.group(2)) + offset
        found.append(index)
        return f"{match.group(1)}{index}"

    return _INPUT_INDEX.sub(replace, text), (found[0] if found else None)


def _input_index(error: Any, count: int) -> int | None:
    """The failing input's index within the request, from the error's `input_index` field.

    Our proxy and local backend send it; other servers (api.privatemode.ai, the official proxy)
    only name the input in prose or `param`, which `_shift_index` reads as a fallback.
    """
    value = error.get("input_index") if isinstance(error, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < count:
        return value
    return None


def _url_hint(base_url: str, status: int) -> str:
    """What to change when a 404 is likely the base URL's fault, not the model's."""
    if status != 404 or base_url.rstrip("/").endswith("/v1"):
        return ""
    return (
        f". The base URL {base_url} does not end in /v1, where the proxy serves "
        f"/v1/embeddings: try base_url='{base_url.rstrip('/')}/v1'"
    )


def status_error(
    response: httpx.Response,
    *,
    offset: int,
    count: int,
    attempts: int,
    base_url: str | None = None,
) -> APIStatusError:
    """The exception for an error response to a request carrying inputs offset..offset+count-1.

    With `base_url`, a 404 from a base URL without `/v1` says so.
    """
    status = response.status_code
    message: str | None = None
    error_type = param = code = None
    body: Any = None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "") or None
        error_type = str(error["type"]) if error.get("type") is not None else None
        param = str(error["param"]) if error.get("param") is not None else None
        code = str(error["code"]) if error.get("code") is not None else None
    elif isinstance(error, str):
        message = error
    elif isinstance(body, dict) and "detail" in body:
        message = str(body["detail"])
    if message is None:
        text = response.text.strip()
        message = text[:500] if text else response.reason_phrase or "no details"

    structured = _input_index(error, count)
    message, index = _shift_index(message, offset)
    if param is not None:
        param, param_index = _shift_index(param, offset)
        index = param_index if param_index is not None else index
    if structured is not None:
        index = structured + offset
    cls = status_error_class(status)
    if (
        cls is BadRequestError
        and index is not None
        and (code in _TOKEN_LIMIT_CODES or _TOKEN_LIMIT_WORDS.search(message))
    ):
        cls = InputTooLongError
    where = f" (input {index})" if index is not None and f"{index}" not in message else ""
    full = f"Privatemode endpoint answered {status}{where}: {message}"
    if base_url is not None:
        full += _url_hint(base_url, status)
    if attempts > 1:
        full += f" (after {attempts} attempts)"
    return cls(
        full,
        status_code=status,
        error_type=error_type,
        param=param,
        code=code,
        input_index=index,
        attempts=attempts,
        body=body,
    )


def too_long_error(
    model: str, limit: int, too_long: Sequence[tuple[int, int]], total: int, *, exact: bool
) -> InputTooLongError:
    """The error for inputs found too long before anything was sent, naming every one."""
    shown = ", ".join(f"{i} ({n} tokens)" for i, n in too_long[:_SHOWN_INDICES])
    more = f" and {len(too_long) - _SHOWN_INDICES} more" if len(too_long) > _SHOWN_INDICES else ""
    counted = "counted with its own tokenizer" if exact else "at least, judged by their length"
    which = "input" if len(too_long) == 1 else "inputs"
    message = (
        f"{len(too_long)} of {total} inputs are too long for model '{model}', which accepts at "
        f"most {limit} tokens per input ({counted}): {which} {shown}{more}. Nothing was sent. "
        "Split long texts first, e.g. with PrivatemodeEmbeddings(...).text_splitter() or "
        "PrivatemodeEmbedding(...).node_parser()."
    )
    return InputTooLongError(
        message,
        status_code=400,
        error_type="invalid_request_error",
        param="input",
        code="context_length_exceeded",
        input_index=too_long[0][0],
        input_indices=[i for i, _ in too_long],
        attempts=0,
    )


class EmbeddingsClient:
    """Embeds texts through an OpenAI-compatible `/v1/embeddings` endpoint (the Privatemode proxy).

    Shared by `PrivatemodeEmbeddings` (LangChain) and `PrivatemodeEmbedding` (LlamaIndex), and
    usable on its own:

        with EmbeddingsClient(model="qwen3-embedding-4b") as client:
            vectors = client.embed(["first text", "second text"])  # np.float32, (2, dim)

    Inputs are packed into as few requests as the model's limits allow, sent with at most
    `max_concurrency` requests in flight, retried by one retry layer, and returned in input order.
    Empty strings are embedded like any other text (the model's vector for ""). A text longer than
    the model accepts fails the whole call with an error whose `input_index` names it.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | SecretStr | None = None,
        model: str = _settings.DEFAULT_MODEL,
        dimensions: int | None = None,
        batch_size: int | None = None,
        max_concurrency: int = _settings.DEFAULT_MAX_CONCURRENCY,
        max_retries: int = _settings.DEFAULT_MAX_RETRIES,
        timeout: float | httpx.Timeout | None = _settings.DEFAULT_TIMEOUT,
        show_progress_bar: bool = False,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
        retry_policy: RetryPolicy | None = None,
        limits: ModelLimits | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if dimensions is not None and dimensions < 1:
            raise ValueError(f"dimensions must be >= 1, got {dimensions}")
        # `retry_policy` tunes the delays; `max_retries` always sets how many retries there are.
        retry_policy = dataclasses.replace(retry_policy or RetryPolicy(), max_retries=max_retries)
        self.base_url = (base_url or _settings.env_base_url()).rstrip("/")
        self._api_key = _as_secret(api_key if api_key is not None else _settings.env_api_key())
        self.model = model
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.retry_policy = retry_policy
        self.timeout = timeout
        self.show_progress_bar = show_progress_bar
        self._default_headers = dict(default_headers or {})
        self._user_client = http_client
        self._user_async_client = http_async_client
        self._limits = limits
        self._token_counter: TokenCounter | None = None
        self._lock = threading.Lock()
        self._sync_client: httpx.Client | None = None
        self._sync_slots = threading.BoundedSemaphore(max_concurrency)
        self._throttle = Throttle()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def local(cls, **kwargs: Any) -> EmbeddingsClient:
        """A client for the bundled local stack, started once per process on first use."""
        from privatemode_integrations._local import local_base_url

        if "base_url" in kwargs:
            raise ValueError("local mode chooses its own base_url; do not pass one")
        kwargs.setdefault("model", _settings.LOCAL_MODEL)
        return cls(base_url=local_base_url(), **kwargs)

    @property
    def max_retries(self) -> int:
        return self.retry_policy.max_retries

    def __repr__(self) -> str:
        return (
            f"EmbeddingsClient(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key={'set' if self._api_key else 'unset'})"
        )

    # ---- connections -------------------------------------------------------------------

    def _limits_config(self) -> httpx.Limits:
        pool = self.max_concurrency + 1  # + one for a concurrent /v1/models lookup
        return httpx.Limits(max_connections=pool, max_keepalive_connections=pool)

    def _client(self) -> httpx.Client:
        if self._user_client is not None:
            return self._user_client
        with self._lock:
            if self._sync_client is None:
                self._sync_client = httpx.Client(limits=self._limits_config(), timeout=self.timeout)
            return self._sync_client

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._lock:
            # A closed loop's client holds the loop alive (and so its weak key): drop it.
            for closed in [known for known in self._loops if known.is_closed()]:
                del self._loops[closed]
            state = self._loops.get(loop)
            if state is None:
                if self._user_async_client is not None:
                    client, owns = self._user_async_client, False
                else:
                    client = httpx.AsyncClient(limits=self._limits_config(), timeout=self.timeout)
                    owns = True
                state = _LoopState(client, owns, asyncio.Semaphore(self.max_concurrency))
                self._loops[loop] = state
            return state

    def close(self) -> None:
        """Close the connections this client opened (not a caller-supplied `http_client`)."""
        with self._lock:
            client, self._sync_client = self._sync_client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close this event loop's connections that the client opened, and the sync ones."""
        self.close()
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._loops.pop(loop, None)
        if state is not None and state.owns_client:
            await state.client.aclose()

    def __enter__(self) -> EmbeddingsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> EmbeddingsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": _USER_AGENT, **self._default_headers}
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "application/json"
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        timeout = self.timeout
        read_timeout = timeout.read if isinstance(timeout, httpx.Timeout) else timeout
        if read_timeout is not None:
            # How long we wait (the header OpenAI's SDK sends): a pacing proxy refuses at once,
            # with Retry-After, a request it could not start in that time.
            headers["X-Stainless-Timeout"] = f"{read_timeout:g}"
        return headers

    def _timeout_arg(self) -> Any:
        timeout = self.timeout
        if isinstance(timeout, int | float):
            return httpx.Timeout(timeout, connect=min(timeout, _settings.CONNECT_TIMEOUT))
        return timeout

    # ---- model limits ------------------------------------------------------------------

    def _limits_from_response(self, response: httpx.Response) -> tuple[ModelLimits, bool]:
        """Limits from a /v1/models answer, and whether they are worth caching."""
        if response.status_code == 200:
            try:
                body = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                body = None
            found = limits_from_models_response(body, self.model)
            return (found or catalogue_limits(self.model)), True
        retryable = is_retryable_status(response.status_code)
        return catalogue_limits(self.model), not retryable

    def _remember(self, limits: ModelLimits, cache: bool) -> ModelLimits:
        logger.debug("model %s: limits from %s", self.model, limits.source)
        if cache:
            with self._lock:
                self._limits = limits
        return limits

    def _known_limits(self) -> ModelLimits | None:
        """Limits that need no request: remembered ones, or the catalogue's for a model it knows.

        The proxy splits by the same catalogue, so asking `/v1/models` for a catalogued model
        would cost a request (against a 20 requests/minute budget) and learn nothing.
        """
        if self._limits is not None:
            return self._limits
        known = catalogue_limits(self.model)
        return self._remember(known, True) if known.source == "catalogue" else None

    def limits(self) -> ModelLimits:
        """The model's request limits: the catalogue's, else `GET /v1/models`, else defaults."""
        known = self._known_limits()
        if known is not None:
            return known
        try:
            response = self._client().get(
                f"{self.base_url}/models", headers=self._headers(), timeout=self._timeout_arg()
            )
        except httpx.HTTPError as exc:
            logger.debug("GET /models failed (%s); using catalogue limits", type(exc).__name__)
            return catalogue_limits(self.model)
        return self._remember(*self._limits_from_response(response))

    async def alimits(self) -> ModelLimits:
        """`limits()`, without blocking the event loop."""
        known = self._known_limits()
        if known is not None:
            return known
        state = self._loop_state()
        try:
            response = await state.client.get(
                f"{self.base_url}/models", headers=self._headers(), timeout=self._timeout_arg()
            )
        except httpx.HTTPError as exc:
            logger.debug("GET /models failed (%s); using catalogue limits", type(exc).__name__)
            return catalogue_limits(self.model)
        return self._remember(*self._limits_from_response(response))

    # ---- one batch ---------------------------------------------------------------------

    def _body(self, texts: list[str]) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "input": texts,
            "encoding_format": "base64",
        }
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        return orjson.dumps(body)

    def _connection_error(self, exc: Exception, attempts: int) -> APIConnectionError:
        cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        what = "timed out" if cls is APITimeoutError else f"failed ({type(exc).__name__})"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        tls = tls_failure(exc)
        if tls is not None and self.base_url.startswith("https://"):
            plain = "http://" + self.base_url.removeprefix("https://")
            if isinstance(tls, ssl.SSLCertVerificationError):
                why = (
                    f"its certificate is not trusted ({tls.verify_message}); pass "
                    "http_client=httpx.Client(verify='ca.pem') with the CA that signed it"
                )
            else:
                why = (
                    f"the server there does not speak HTTPS ({tls.reason or type(tls).__name__})."
                    " privatemode-proxy serves plain HTTP on 127.0.0.1 unless started with "
                    f"--tlsCertPath: use base_url='{plain}'"
                )
            return cls(
                f"request to {self.base_url}/embeddings failed{tries}: TLS handshake failed, "
                f"{why}",
                attempts=attempts,
            )
        return cls(
            f"request to {self.base_url}/embeddings {what}{tries}; is the Privatemode proxy "
            f"running there? (set base_url or {_settings.BASE_URL_ENV})",
            attempts=attempts,
        )

    def _retry_delay(
        self, attempt: int, response: httpx.Response | None, why: str, batch: range
    ) -> float:
        retry_after = parse_retry_after(response.headers) if response is not None else None
        delay = self.retry_policy.delay(attempt, retry_after)
        if _rate_limited(response):
            self._throttle.refused(delay)  # the whole client holds back, not only this request
        logger.info(
            "embeddings request for inputs %d..%d: %s; retry %d of %d in %.2f s",
            batch.start,
            batch.stop - 1,
            why,
            attempt,
            self.retry_policy.max_retries,
            delay,
        )
        return delay

    def _judge(
        self, response: httpx.Response, batch: range, attempt: int, attempts: int
    ) -> tuple[Vectors | None, str]:
        """One answer, for the sync and async senders alike: the vectors, or why to retry.

        Raises the status error when the answer is final (not retryable, or the last attempt).
        """
        if response.is_success:
            return decode_embeddings(response.content, len(batch), self.dimensions), ""
        if not is_retryable_status(response.status_code) or attempt == attempts:
            raise status_error(
                response,
                offset=batch.start,
                count=len(batch),
                attempts=attempt,
                base_url=self.base_url,
            )
        return None, f"status {response.status_code}"

    def _send_batch(self, texts: list[str], batch: range, abort: threading.Event | None) -> Vectors:
        client = self._client()
        content = self._body(texts[batch.start : batch.stop])
        url = f"{self.base_url}/embeddings"
        attempts = self.retry_policy.max_retries + 1
        sleep = functools.partial(_sleep_unless, abort)
        holding = False  # the throttle's one-at-a-time turn, kept through a 429's retry
        try:
            for attempt in range(1, attempts + 1):
                if abort is not None and abort.is_set():
                    raise _Aborted
                response: httpx.Response | None = None
                with self._throttle.turn(sleep, holding=holding), self._sync_slots:
                    try:
                        response = client.post(
                            url,
                            content=content,
                            headers=self._headers(),
                            timeout=self._timeout_arg(),
                        )
                    except httpx.HTTPError as exc:
                        if not is_retryable_exception(exc) or attempt == attempts:
                            raise self._connection_error(exc, attempt) from exc
                        why = type(exc).__name__
                if response is not None:
                    vectors, why = self._judge(response, batch, attempt, attempts)
                    if vectors is not None:
                        return vectors
                delay = self._retry_delay(attempt, response, why, batch)
                if _rate_limited(response) and not holding:
                    self._throttle.keep_turn(sleep)
                    holding = True
                sleep(delay)
        finally:
            if holding:
                self._throttle.release_turn()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _asend_batch(self, state: _LoopState, texts: list[str], batch: range) -> Vectors:
        content = self._body(texts[batch.start : batch.stop])
        url = f"{self.base_url}/embeddings"
        attempts = self.retry_policy.max_retries + 1
        holding = False  # the throttle's one-at-a-time turn, kept through a 429's retry
        try:
            for attempt in range(1, attempts + 1):
                response: httpx.Response | None = None
                async with self._throttle.aturn(state.serial, holding=holding), state.slots:
                    try:
                        response = await state.client.post(
                            url,
                            content=content,
                            headers=self._headers(),
                            timeout=self._timeout_arg(),
                        )
                    except httpx.HTTPError as exc:
                        if not is_retryable_exception(exc) or attempt == attempts:
                            raise self._connection_error(exc, attempt) from exc
                        why = type(exc).__name__
                if response is not None:
                    vectors, why = self._judge(response, batch, attempt, attempts)
                    if vectors is not None:
                        return vectors
                delay = self._retry_delay(attempt, response, why, batch)
                if _rate_limited(response) and not holding:
                    await state.serial.acquire()
                    holding = True
                await asyncio.sleep(delay)
        finally:
            if holding:
                state.serial.release()
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- whole calls -------------------------------------------------------------------

    def _empty(self) -> Vectors:
        return np.zeros((0, self.dimensions or 0), dtype=np.float32)

    @contextlib.contextmanager
    def _progress(self, total: int, show: bool) -> Iterator[Any]:
        bar = tqdm(total=total, desc="Embedding", unit="text", disable=not show, leave=False)
        try:
            yield bar
        finally:
            bar.close()

    def tokens(self) -> TokenCounter:
        """Token counts for this client's model: exact for the local model, else bounds."""
        with self._lock:
            if self._token_counter is None or self._token_counter.model != self.model:
                self._token_counter = TokenCounter(self.model)
            return self._token_counter

    def _check_lengths(self, texts: list[str], limits: ModelLimits | None) -> None:
        """Refuse the whole call, before anything is sent, when an input is certainly too long.

        Only limits the client knows (catalogue or server) count; defaults for an unknown model
        are a guess, so there the server decides.
        """
        if limits is None or limits.source == "default":
            return
        counter = self.tokens()
        too_long = counter.too_long(texts, limits.max_tokens_per_input)
        if too_long:
            raise too_long_error(
                self.model, limits.max_tokens_per_input, too_long, len(texts), exact=counter.exact
            )

    def _order(
        self, texts: list[str], batches: list[range], limits: ModelLimits | None
    ) -> list[int]:
        """The order to send `batches` in: those the server may refuse first.

        Without the model's tokenizer the client cannot be sure a long text fits; sending its
        request first means a refusal comes before the rest of the work, not after it.
        """
        order = list(range(len(batches)))
        if limits is None or limits.source == "default" or len(batches) == 1:
            return order
        doubtful = set(self.tokens().may_be_too_long(texts, limits.max_tokens_per_input))
        if not doubtful:
            return order
        first = [i for i in order if any(j in doubtful for j in batches[i])]
        chosen = set(first)
        return first + [i for i in order if i not in chosen]

    def _plan(
        self,
        texts: list[str],
        limits: ModelLimits | None,
        progress: bool = False,
        call_batch_size: int | None = None,
    ) -> list[range]:
        if limits is None:
            return [range(0, len(texts))]
        batch_size = self.batch_size
        if call_batch_size is not None:
            batch_size = min(batch_size or call_batch_size, call_batch_size)
        if progress:
            step = max(_PROGRESS_MIN_INPUTS, -(-len(texts) // _PROGRESS_STEPS))
            batch_size = min(batch_size or step, step)
        batches = pack_batches(texts, limits, batch_size)
        logger.debug(
            "embedding %d inputs in %d requests (model %s, limits from %s)",
            len(texts),
            len(batches),
            self.model,
            limits.source,
        )
        return batches

    def embed(
        self,
        texts: Sequence[str],
        *,
        show_progress: bool | None = None,
        batch_size: int | None = None,
    ) -> Vectors:
        """Embed `texts`; one float32 row per input, in input order.

        The whole call is checked first: an input certainly too long for the model fails it
        with `InputTooLongError` naming every such input, before any request is sent.
        `show_progress` overrides `show_progress_bar` for this call; `batch_size` caps the
        inputs per request for this call (the smaller of it and the client's wins).
        """
        items = check_texts(texts)
        if not items:
            return self._empty()
        show = self.show_progress_bar if show_progress is None else show_progress
        limits = self.limits() if len(items) > 1 else self._known_limits()
        self._check_lengths(items, limits)
        batches = self._plan(items, limits if len(items) > 1 else None, show, batch_size)
        order = self._order(items, batches, limits)
        results: list[Vectors | None] = [None] * len(batches)
        workers = min(self.max_concurrency, len(batches))
        with self._progress(len(items), show) as bar:
            if workers == 1:
                for i in order:
                    results[i] = self._send_batch(items, batches[i], None)
                    bar.update(len(batches[i]))
            else:
                for i, vectors in self._send_in_threads(items, batches, order, workers):
                    results[i] = vectors
                    bar.update(len(batches[i]))
        return _merge(results)

    def _send_in_threads(
        self, items: list[str], batches: list[range], order: list[int], workers: int
    ) -> Iterator[tuple[int, Vectors]]:
        """(batch index, vectors) as batches finish, sent by `workers` daemon threads.

        A failed batch or Ctrl-C raises here at once: no further batch is sent and the requests
        in flight are abandoned, not waited for (a thread pool's shutdown would wait for each of
        them, up to the timeout). The daemon threads never hold up the interpreter's exit, and a
        proxy cancels the work of a client that went away.
        """
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in order:
            todo.put(i)
        done: queue.SimpleQueue[tuple[int, Vectors | None, BaseException | None]] = (
            queue.SimpleQueue()
        )
        abort = threading.Event()

        def work() -> None:
            while not abort.is_set():
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((i, self._send_batch(items, batches[i], abort), None))
                except BaseException as exc:  # handed to the caller's thread
                    done.put((i, None, exc))
                    return

        for n in range(workers):
            threading.Thread(target=work, name=f"privatemode-embed-{n}", daemon=True).start()
        try:
            for _ in range(len(batches)):
                while True:
                    try:  # a short timeout keeps the wait interruptible by Ctrl-C
                        i, vectors, error = done.get(timeout=0.25)
                        break
                    except queue.Empty:
                        continue
                if error is not None:
                    raise error
                assert vectors is not None
                yield i, vectors
        finally:
            abort.set()

    async def aembed(
        self,
        texts: Sequence[str],
        *,
        show_progress: bool | None = None,
        batch_size: int | None = None,
    ) -> Vectors:
        """Embed `texts` without blocking the event loop; same result as `embed`."""
        items = check_texts(texts)
        if not items:
            return self._empty()
        show = self.show_progress_bar if show_progress is None else show_progress
        limits = await self.alimits() if len(items) > 1 else self._known_limits()
        self._check_lengths(items, limits)
        batches = self._plan(items, limits if len(items) > 1 else None, show, batch_size)
        order = self._order(items, batches, limits)
        state = self._loop_state()
        with self._progress(len(items), show) as bar:

            async def run(batch: range) -> Vectors:
                vectors = await self._asend_batch(state, items, batch)
                bar.update(len(batch))
                return vectors

            if len(batches) == 1:
                return await run(batches[0])
            tasks = {i: asyncio.ensure_future(run(batches[i])) for i in order}
            try:
                await asyncio.gather(*tasks.values())
            except BaseException:
                for task in tasks.values():
                    task.cancel()
                await asyncio.gather(*tasks.values(), return_exceptions=True)
                raise
        return _merge([tasks[i].result() for i in range(len(batches))])


def _merge(results: Sequence[Vectors | None]) -> Vectors:
    parts = [r for r in results if r is not None]
    if len(parts) != len(results):  # pragma: no cover - every batch either returns or raises
        raise PrivatemodeError("a batch finished without a result")
    if len(parts) == 1:
        return parts[0]
    dims = {p.shape[1] for p in parts}
    if len(dims) != 1:
        raise APIResponseError(f"batches came back with different dimensions {sorted(dims)}")
    return np.concatenate(parts, axis=0)
