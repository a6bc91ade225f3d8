"""A fault-injecting HTTP relay on 127.0.0.1, between the proxy and the backend (test code).

`FaultRelay` is a real TCP server with its own event loop in a background thread. It reads each
HTTP/1.1 request the proxy sends (keep-alive, Content-Length bodies, as httpx sends them), and by
default forwards it to the backend and writes the backend's answer back. Scripted rules replace
that for chosen requests: a rule matches a path and is used for the next N requests to it (or
for all of them). A rule is an async function `(relay, exchange) -> None` that must either set
`exchange.response` (the relay writes it) or take over the connection itself (reset, stall,
truncated writes) and set `exchange.outcome`.

Every request is recorded as an `Exchange` (path, headers, body, the request nonce and secret ID
of an encrypted inference request, what the relay did and what it answered), so a test can say
exactly how often and how the proxy retried.
"""

from __future__ import annotations

import asyncio
import base64
import http
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    }
)


@dataclass
class Response:
    """What the relay writes back to the proxy."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Exchange:
    """One request the proxy sent through the relay, and what became of it."""

    index: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    action: str = "forward"
    forwarded: bool = False
    """Whether the request reached the backend."""
    backend_response: Response | None = None
    response: Response | None = None
    """What the relay answered (None when it reset, stalled or cut the connection)."""
    outcome: str = ""

    @property
    def secret_id(self) -> str | None:
        return self.headers.get("privatemode-secret-id")

    @property
    def request_nonce(self) -> str | None:
        """The request nonce (hex) of an encrypted inference request, from its first field."""
        try:
            obj = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        for key in sorted(obj):
            value = obj[key]
            if key != "model" and isinstance(value, str) and value.count(":") == 3:
                return value.split(":")[1]
        return None


Action = Callable[["FaultRelay", Exchange], Awaitable[None]]


@dataclass
class _Rule:
    path: str
    action: Action
    name: str
    remaining: int | None  # None: every matching request


class ConnectionTakenOver(Exception):
    """Raised by an action that already wrote to (or closed) the connection itself."""


class FaultRelay:
    """HTTP relay proxy -> backend with scripted faults. Use as a context manager or start/stop."""

    def __init__(self, target_url: str, *, backend: Any = None) -> None:
        self.target_url = target_url.rstrip("/")
        self.backend = backend
        """The `LocalBackend` behind the relay, for actions that restart it or read its secrets."""
        self.exchanges: list[Exchange] = []
        self.action_errors: list[str] = []
        """Exceptions raised by scripted actions (tests assert there are none)."""
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._task_writers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultRelay:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-relay", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise TimeoutError("the relay did not start")
        if failure:
            raise failure[0]
        return self

    async def _open(self) -> None:
        # No keep-alive to the backend: a restarted backend never meets a stale pooled socket.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(120.0, connect=5.0),
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        self._loop = self._thread = None

    def __enter__(self) -> FaultRelay:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- scripting -----------------------------------------------------------------------------

    def on(self, path: str, action: Action, *, times: int | None = 1, name: str = "") -> None:
        """Apply `action` to the next `times` requests for `path` (None: to all of them).

        Rules for one path are used in the order they were added.
        """
        label = name or getattr(action, "__name__", "action")
        with self._lock:
            self._rules.append(_Rule(path, action, label, times))

    def reset_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def clear(self) -> None:
        """Forget the rules and the recorded exchanges (action errors are kept)."""
        with self._lock:
            self._rules.clear()
            self.exchanges.clear()

    def pending_rules(self) -> int:
        with self._lock:
            return sum(1 for r in self._rules if r.remaining is None or r.remaining > 0)

    def to(self, path: str) -> list[Exchange]:
        """The recorded exchanges for `path`, in arrival order."""
        with self._lock:
            return [e for e in self.exchanges if e.path == path]

    def _take_rule(self, path: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.path != path:
                    continue
                if rule.remaining is None:
                    return rule
                if rule.remaining > 0:
                    rule.remaining -= 1
                    return rule
            return None

    # -- serving -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.add(writer)
        self._task_writers[task] = writer
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                method, path, headers, body = request
                with self._lock:
                    exchange = Exchange(len(self.exchanges), method, path, headers, body)
                    self.exchanges.append(exchange)
                rule = self._take_rule(path)
                try:
                    if rule is None:
                        await forward(self, exchange)
                    else:
                        exchange.action = rule.name
                        await rule.action(self, exchange)
                except ConnectionTakenOver:
                    break
                except Exception as exc:
                    # A broken action must fail the test, not pass as a connection reset.
                    self.action_errors.append(f"{exchange.action} on {path}: {exc!r}")
                    raise
                if exchange.response is None:
                    raise RuntimeError(f"relay action {exchange.action} set no response")
                writer.write(_encode_response(exchange.response))
                await writer.drain()
                exchange.outcome = exchange.outcome or f"answered {exchange.response.status}"
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception:  # recorded in action_errors; the connection is dropped
            pass
        finally:
            self._writers.discard(writer)
            self._task_writers.pop(task, None)
            self._connections.discard(task)
            writer.transport.abort()

    # -- helpers for actions ------------------------------------------------------------------

    async def call_backend(self, exchange: Exchange) -> Response:
        """Send the exchange's request to the backend unchanged; returns its answer."""
        assert self._client is not None
        headers = [
            (k, v)
            for k, v in exchange.headers.items()
            if k not in _HOP_BY_HOP and k not in ("host", "accept-encoding")
        ]
        headers.append(("accept-encoding", "identity"))
        resp = await self._client.request(
            exchange.method, self.target_url + exchange.path, headers=headers, content=exchange.body
        )
        exchange.forwarded = True
        answer = Response(
            resp.status_code,
            resp.content,
            [(k, v) for k, v in resp.headers.items() if k.lower() not in _HOP_BY_HOP],
        )
        exchange.backend_response = answer
        return answer

    async def backend_post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """The relay's own request to the backend (an attacker asking for its own answers)."""
        assert self._client is not None
        return await self._client.post(
            self.target_url + path,
            content=body,
            headers={"content-type": "application/json", **(headers or {})},
        )


# -- the wire ------------------------------------------------------------------------------------


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, target, headers, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


def _encode_head(response: Response, content_length: int) -> bytes:
    lines = [_status_line(response.status)]
    for name, value in response.headers:
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    lines.append(f"content-length: {content_length}\r\n\r\n".encode("latin-1"))
    return b"".join(lines)


def _encode_response(response: Response) -> bytes:
    return _encode_head(response, len(response.body)) + response.body


def _taken_over(exchange: Exchange, outcome: str) -> ConnectionTakenOver:
    exchange.outcome = outcome
    return ConnectionTakenOver(outcome)


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- actions -------------------------------------------------------------------------------------
# Each returns an `Action`. Actions that take the connection over find its writer through the
# task that serves the connection (one request at a time per connection).


def _current_writer(relay: FaultRelay) -> asyncio.StreamWriter:
    task = asyncio.current_task()
    writer = relay._task_writers.get(task) if task is not None else None
    if writer is None:
        raise RuntimeError("no connection for this action")
    return writer


async def forward(relay: FaultRelay, exchange: Exchange) -> None:
    """The default: pass the request to the backend, its answer back."""
    exchange.response = await relay.call_backend(exchange)


def respond(
    status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> Action:
    """Answer without asking the backend."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)

    async def action(relay: FaultRelay, exchange: Exchange) -> None:
        exchange.response = Response(
            status,
            content,
            [("content-type", "application/json"), *(headers or {}).items()],
        )

    action.__name__ = f"respond_{status}"
    return action


def openai_error(message: str, *, type_: str = "server_error", code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def no_secret_for_id() -> Action:
    """A worker that does not know the secret: 500 with `no secret for ID` (protocol §5)."""

    async def action(relay: FaultRelay, exchange: Exchange) -> None:
        sid = exchange.secret_id or "?"
        body = openai_error(f"no secret for ID {sid!r}", code="unknown_secret")
        exchange.response = Response(
            500, body, [("content-type", "application/json"), ("privatemode-encrypted", "false")]
        )

    action.__name__ = "no_secret_for_id"
    return action


def reset(*, after_backend: bool = False) -> Action:
    """Reset the connection (TCP RST); with `after_backend`, once the backend has answered."""

    async def action(relay: FaultRelay, exchange: Exchange) -> None:
        if after_backend:
            await relay.call_backend(exchange)
        _rst(_current_writer(relay))
        raise _taken_over(exchange, "reset" + (" after backend" if after_backend else ""))

    action.__name__ = "reset_after_backend" if after_backend else "reset"
    return action


def stall(seconds: float, *, partial: bool = False) -> Action:
    """Hold the connection without answering (with `partial`: after headers and half a body)."""

    async def action(relay: FaultRelay, exchange: Exchange) -> None:
        writer = _current_writer(relay)
        if partial:
            answer = await relay.call_backend(exchange)
            writer.write(
                _encode_head(answer, len(answer.body)) + answer.body[: len(answer.body) // 2]
            )
            await writer.drain()
        await asyncio.sleep(seconds)
        writer.transport.abort()
        raise _taken_over(exchange, f"stalled {seconds} s" + (" mid-body" if partial else ""))

    action.__name__ = "stall_mid_body" if partial else "stall"
    return action


def hold(release: threading.Event, *, timeout: float = 60.0) -> Action:
    """Forward at once, but keep the backend's answer until `release` is set (a slow answer:
    the backend has acted on the request, the proxy does not know it yet)."""

    async def action(relay: FaultRelay, exchange: Exchange) -> None:
        answer = await relay.call_backend(exchange)
        released = await asyncio.to_thread(release.wait, timeout)
        exchange.outcome = "held, then answered" if released else "held until timeout"
        exchange.response = answer

    action.__name__ = "hold"
    return action


def truncate(fraction: float = 0.5, *, close: bool = True) -> Action:
    """Cut the backend's answer to `fraction` of its bytes.

    `close`: announce the full Content-Length, send the prefix and close the connection (a body
    cut short on the wire). Otherwise a well-framed answer whose body is just the prefix.
    """

    async def action(relay: FaultRelay, exchange: Exchange) -> None:
        answer = await relay.call_backend(exchange)
        cut = answer.body[: int(len(answer.body) * fraction)]
        if close:
            writer = _current_writer(relay)
            writer.write(_encode_head(answer, len(answer.body)) + cut)
            await writer.drain()
            writer.transport.close()
            raise _taken_over(exchange, f"cut to {len(cut)} of {len(answer.body)} bytes, closed")
        exchange.response = Response(answer.status, cut, answer.headers)

    action.__name__ = "truncate_and_close" if close else "truncate_framed"
    return action


def rewrite(
    change: Callable[[Exchange, Response], Response | Awaitable[Response]], name: str
) -> Action:
    """Forward, then answer `change(exchange, backend answer)`."""

    async def action(relay: FaultRelay, exchange: Exchange) -> None:
        answer = await relay.call_backend(exchange)
        result = change(exchange, answer)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, Response)
        exchange.response = result

    action.__name__ = name
    return action


def replay(source: Callable[[], Exchange]) -> Action:
    """Forward, then answer with the response an earlier exchange got instead."""

    async def action(relay: FaultRelay, exchange: Exchange) -> None:
        await relay.call_backend(exchange)
        earlier = source()
        assert earlier.response is not None
        exchange.response = earlier.response

    action.__name__ = "replay"
    return action


def restart_backend(*, then: Action | None = None) -> Action:
    """Restart the backend (it loses every secret), then forward (or run `then`)."""

    async def action(relay: FaultRelay, exchange: Exchange) -> None:
        backend = relay.backend
        assert backend is not None, "the relay was made without its backend"
        await asyncio.to_thread(backend.stop)
        await asyncio.to_thread(backend.start)
        await (then or forward)(relay, exchange)

    action.__name__ = "restart_backend"
    return action


def backend_down() -> Action:
    """Stop the backend for good, then try to forward (connection refused, answered as 502)."""

    async def action(relay: FaultRelay, exchange: Exchange) -> None:
        backend = relay.backend
        assert backend is not None
        await asyncio.to_thread(backend.stop)
        try:
            await relay.call_backend(exchange)
        except httpx.ConnectError:
            # What a real reverse proxy in front of a dead backend says.
            exchange.response = Response(
                502, b"Bad Gateway: connection refused", [("content-type", "text/plain")]
            )
            return
        raise AssertionError("the backend still answered after stop()")

    action.__name__ = "backend_down"
    return action


# -- encrypted fields --------------------------------------------------------------------------


@dataclass
class Token:
    """An encrypted field value, `secretID:nonce:iv:ciphertext` (hex parts)."""

    secret_id: str
    nonce: str
    iv: str
    ciphertext: str

    @classmethod
    def parse(cls, value: str) -> Token:
        secret_id, nonce, iv, ciphertext = value.split(":")
        return cls(secret_id, nonce, iv, ciphertext)

    def __str__(self) -> str:
        return f"{self.secret_id}:{self.nonce}:{self.iv}:{self.ciphertext}"


def flip_hex(text: str, position: int) -> str:
    """`text` (hex) with one hex digit changed at `position` (so one byte differs)."""
    position %= len(text)
    digit = text[position]
    new = "0" if digit != "0" else "1"
    return text[:position] + new + text[position + 1 :]


def b64decode_doc(body: bytes) -> bytes:
    return base64.b64decode(orjson.loads(body)["AttestationDoc"], validate=True)


def b64encode_doc(document: bytes) -> bytes:
    return orjson.dumps({"AttestationDoc": base64.b64encode(document).decode("ascii")})
