"""Keep web pages out, and log each request in one line.

Keep web pages out: the proxy adds the user's API key upstream, so a page must not use it.

A page the user visits can send a "simple" cross-origin request (`Content-Type: text/plain`, no
CORS preflight) to `http://127.0.0.1:8080`, and with DNS rebinding (its own name resolving to
127.0.0.1) even read the answers and the status page. `BrowserGuard` refuses, before any route:

- a `Host` that is neither an IP literal, `localhost`, nor a name allowed by configuration
  (DNS rebinding always carries the attacker's name);
- a request with a browser `Origin` (or a cross-site `Sec-Fetch-Site`) not allowed by
  configuration; allowed origins get CORS headers and their preflights answered;
- a `POST` whose body is not declared `application/json` (a preflight-free simple request).

Non-browser clients (the OpenAI SDKs, LangChain, LlamaIndex, curl with `-H 'Content-Type:
application/json'`) send no `Origin` and are unaffected.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from privatemode_proxy.openai import error_body


@dataclass(frozen=True)
class BrowserPolicy:
    """Which `Host` names and browser origins the proxy accepts."""

    allowed_hosts: tuple[str, ...] = ()
    """Host names besides IP literals and `localhost` (e.g. a Docker service name); `*` any."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins (`https://app.example`) allowed to call the proxy with CORS; `*` any.
    None by default: a web page must not spend the user's API key."""

    @classmethod
    def of(cls, hosts: Iterable[str] = (), origins: Iterable[str] = ()) -> BrowserPolicy:
        return cls(
            tuple(h.strip().lower().rstrip(".") for h in hosts if h.strip()),
            tuple(o.strip().rstrip("/") for o in origins if o.strip()),
        )

    def host_allowed(self, host_header: str | None) -> bool:
        if host_header is None:  # HTTP/1.0 without Host: not a browser
            return True
        name = _host_name(host_header)
        if name is None:
            return False
        if name == "localhost" or "*" in self.allowed_hosts or name in self.allowed_hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True  # an IP literal cannot be rebound to another address

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.allowed_origins or origin.rstrip("/") in self.allowed_origins


def _host_name(host_header: str) -> str | None:
    """The name in a `Host` header without its port, lower-cased; None if malformed."""
    value = host_header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        return value[1:end]
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json"


class BrowserGuard:
    """ASGI middleware applying a `BrowserPolicy` to every HTTP request."""

    def __init__(self, app: ASGIApp, policy: BrowserPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.policy
        host = _header(scope, b"host")
        if not policy.host_allowed(host):
            await _refuse(
                send,
                403,
                f"requests must be addressed to the proxy by an IP address or localhost; Host "
                f"{_printable(host)!r} is not allowed (DNS rebinding protection). To reach the "
                "proxy by this name, start it with --allowedHosts NAME",
                "host_not_allowed",
            )
            return
        origin = _header(scope, b"origin")
        site = _header(scope, b"sec-fetch-site")
        mode = _header(scope, b"sec-fetch-mode")
        if origin is not None and not policy.origin_allowed(origin):
            await _refuse(
                send,
                403,
                f"requests from web pages (Origin {_printable(origin)!r}) are refused: a page "
                "must not spend your API key. To allow a web app, start the proxy with "
                "--allowedOrigins ORIGIN",
                "origin_not_allowed",
            )
            return
        if origin is None and site in ("cross-site", "same-site") and mode != "navigate":
            await _refuse(
                send,
                403,
                "cross-site requests from web pages are refused: a page must not spend your "
                "API key",
                "origin_not_allowed",
            )
            return
        method = scope["method"]
        if origin is not None and method == "OPTIONS":
            await _preflight(send, origin)
            return
        if method == "POST" and not _is_json(_header(scope, b"content-type")):
            await _refuse(
                send,
                415,
                "send the request body as JSON with the header 'Content-Type: application/json'",
                "unsupported_media_type",
            )
            return
        if origin is None:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
                headers.append((b"vary", b"Origin"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _printable(value: str | None) -> str:
    text = (value or "")[:200]
    return "".join(c if c.isprintable() else "?" for c in text)


async def _refuse(send: Send, status: int, message: str, code: str) -> None:
    body = orjson.dumps(error_body(message, type="invalid_request_error", code=code))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _preflight(send: Send, origin: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", b"GET, POST"),
                (b"access-control-allow-headers", b"authorization, content-type"),
                (b"access-control-max-age", b"600"),
                (b"vary", b"Origin"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


class RequestLog:
    """ASGI middleware: one concise `info` line per request (method, path, status, inputs,
    tokens, milliseconds), from what the handler left in the request's state. Never texts, keys
    or query strings."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_see)
        finally:
            state = scope.get("state") or {}
            extra = "".join(
                f" {name}={state[name]}" for name in ("inputs", "tokens") if name in state
            )
            _access.info(
                "%s %s %s%s %.0f ms",
                scope["method"],
                _printable(scope["path"])[:100],
                status or "-",
                extra,
                (time.perf_counter() - started) * 1000,
            )


_access = logging.getLogger("privatemode_proxy.requests")
