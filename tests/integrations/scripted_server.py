"""ScriptedOpenAIServer: a small OpenAI-compatible test server, for what the real stack can't do.

The real local stack can't be told to answer 429 with `Retry-After`, 503 or 400 on cue, nor to
hold requests open so concurrency can be counted. This server can: it is a real HTTP server on
127.0.0.1 (FastAPI under uvicorn, via `privatemode_proxy._serving.ServerThread`) answering
`/v1/embeddings` and `/v1/models`, with deterministic vectors derived from each text's hash (not a
model: it is a test double and its name says so). Tests queue scripted answers, which are used
by the next requests in arrival order; everything it sees is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from privatemode_proxy._serving import ServerThread

from privatemode_integrations import RetryPolicy

DIMENSIONS = 16

FAST_RETRIES = RetryPolicy(initial_delay=0.01, max_delay=0.05)
"""Backoff short enough for tests against this server's scripted failures."""


def scripted_vector(text: str, dimensions: int = DIMENSIONS) -> np.ndarray:
    """The unit vector this server returns for `text` (deterministic, from the text's hash)."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    return vector / np.linalg.norm(vector)


@dataclass
class Scripted:
    """One scripted answer: a status, an OpenAI-shaped error body, optional headers."""

    status: int
    message: str = "scripted error"
    headers: dict[str, str] = field(default_factory=dict)
    param: str | None = None
    code: str | None = None

    def response(self) -> Response:
        body = {
            "error": {
                "message": self.message,
                "type": "invalid_request_error" if self.status < 500 else "server_error",
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


@dataclass
class Seen:
    """One request the server received."""

    path: str
    at: float
    headers: dict[str, str]
    client_port: int | None
    body: dict[str, Any] | None


class ScriptedOpenAIServer:
    """A test server speaking the OpenAI embeddings API, with scripted failures and counters."""

    def __init__(self, *, model: str = "scripted-model") -> None:
        self.model = model
        self._lock = threading.Lock()
        self._script: deque[Scripted] = deque()
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0
        """Seconds each embeddings request is held open (to make concurrency measurable)."""
        self.models_limits: dict[str, int] | None = None
        """Limits published in the /v1/models entry (None: the entry carries none)."""
        self.max_tokens_per_input: int | None = None
        """Refuse an input with more whitespace-separated words than this, naming its index."""
        self._server = ServerThread(self._app())

    # ---- control ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self._server.url}/v1"

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.seen.clear()
            self.in_flight = self.max_in_flight = 0
            self.delay = 0.0
            self.models_limits = None
            self.max_tokens_per_input = None

    def script(self, *answers: Scripted) -> None:
        """Answer the next requests to /v1/embeddings with these, in order."""
        with self._lock:
            self._script.extend(answers)

    def embedding_requests(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == "/v1/embeddings"]

    def model_requests(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == "/v1/models"]

    def start(self) -> ScriptedOpenAIServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- the app ---------------------------------------------------------------------------

    def _record(self, request: Request, body: dict[str, Any] | None) -> None:
        seen = Seen(
            path=request.url.path,
            at=time.monotonic(),
            headers={k.lower(): v for k, v in request.headers.items()},
            client_port=request.client.port if request.client else None,
            body=body,
        )
        with self._lock:
            self.seen.append(seen)

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models(request: Request) -> Response:
            self._record(request, None)
            entry: dict[str, Any] = {"id": self.model, "object": "model", "owned_by": "test"}
            if self.models_limits:
                entry.update(self.models_limits)
            return JSONResponse({"object": "list", "data": [entry]})

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> Response:
            body = await request.json()
            self._record(request, body)
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                scripted = self._script.popleft() if self._script else None
                delay = self.delay
            try:
                if delay:
                    await asyncio.sleep(delay)
                if scripted is not None:
                    return scripted.response()
                return self._answer(body)
            finally:
                with self._lock:
                    self.in_flight -= 1

        return app

    def _answer(self, body: dict[str, Any]) -> Response:
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return Scripted(400, "'input' must be a string or a list of strings").response()
        if body.get("model") != self.model:
            return Scripted(404, f"model '{body.get('model')}' not found").response()
        limit = self.max_tokens_per_input
        if limit is not None:
            for i, text in enumerate(texts):
                if len(text.split()) > limit:
                    return Scripted(
                        400,
                        f"input[{i}] has {len(text.split())} tokens, more than the "
                        f"model's limit of {limit}",
                        param=f"input[{i}]",
                        code="input_too_long",
                    ).response()
        dims = int(body.get("dimensions") or DIMENSIONS)
        use_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector = scripted_vector(text, dims)
            embedding: Any = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
                if use_base64
                else vector.tolist()
            )
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        data.reverse()  # a real server may answer out of order; clients must sort by index
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": self.model,
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        )
