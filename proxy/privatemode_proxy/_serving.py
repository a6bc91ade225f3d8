"""Run an ASGI app with uvicorn in a background thread of this process.

The local backend and the proxy both run in-process for tests, notebooks and the framework
classes' local mode; this is the one place that knows how to start and stop them.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import uvicorn


def bind_socket(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on `host:port`; `ConfigError`-style `ValueError` naming `--port`
    when the port is taken (checked before anything slow starts)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"--port {port}: {host}:{port} is already in use (another proxy or server is "
                "listening there); stop it, or choose a free port with --port"
            ) from None
        raise PortInUseError(
            f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})"
        ) from None
    return sock


class PortInUseError(ValueError):
    """The address to listen on can't be used (taken, or not an address of this machine)."""


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to the hard one (each client connection is a
    file descriptor); returns the soft limit now in force."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # pragma: no cover - a sandbox may refuse
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ConnectionLimits:
    """Protection against clients that connect and then send slowly or not at all."""

    head_timeout_seconds: float = 10.0
    """The request line and headers must arrive within this time of the request's first byte
    (or of the connection); slower connections are closed."""
    max_connections: int | None = None
    """Open client connections; at the limit a new connection closes the oldest one still
    sending its request head, or is itself closed. None: the open-file limit minus a reserve."""
    keep_alive_seconds: int = 5

    def connections(self) -> int:
        if self.max_connections is not None:
            return self.max_connections
        return max(64, open_file_limit() - _FD_RESERVE - accept_backlog())


_FD_RESERVE = 256
"""File descriptors kept for the upstream pool, the log, model and certificate files."""


def accept_backlog() -> int:
    """The listen backlog, which is also how many connections asyncio accepts in one go before
    any is checked against the connection limit: kept within the descriptors held in reserve."""
    return min(2048, max(64, open_file_limit() // 8))


def open_file_limit() -> int:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 1024
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20


_WAITING_HEADS: weakref.WeakKeyDictionary[Any, dict[Any, None]] = weakref.WeakKeyDictionary()


def guarded_h11_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a request-head timeout and a connection limit.

    uvicorn itself times out only idle keep-alive connections: a client that sends half a
    request head and then nothing keeps its socket (and file descriptor) for ever, and 1,124 such
    clients at `ulimit -n 1024` made the proxy unreachable.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    head_timeout = limits.head_timeout_seconds
    max_connections = limits.connections()

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()
            if len(self.connections) > max_connections:
                waiting = _WAITING_HEADS.get(self.server_state, {})
                victim = next((p for p in waiting if p is not self), self)
                victim._drop()

        def data_received(self, data: bytes) -> None:
            if self._head_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request on a kept-alive connection
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(head_timeout, self._drop)
            _WAITING_HEADS.setdefault(self.server_state, {})[self] = None

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            _WAITING_HEADS.get(self.server_state, {}).pop(self, None)

        def _drop(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    limits: ConnectionLimits | None = None,
    **options: Any,
) -> uvicorn.Config:
    """uvicorn's configuration with the guarded protocol and the keep-alive timeout."""
    limits = limits or ConnectionLimits()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_h11_protocol(limits),
        timeout_keep_alive=limits.keep_alive_seconds,
        backlog=accept_backlog(),
        **options,
    )


class ServerThread:
    """An ASGI app served by uvicorn on `host:port` from a daemon thread."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        connection_limits: ConnectionLimits | None = None,
        **uvicorn_options: Any,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        config = server_config(
            app,
            host=self.host,
            port=self.port,
            limits=connection_limits,
            log_level=log_level,
            access_log=False,
            lifespan="on",
            **uvicorn_options,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"uvicorn-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"server on {self.url} exited during startup")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on {self.url} did not start in {timeout} s")
            time.sleep(0.01)

    def _run(self) -> None:
        # A loop of this thread's own; uvicorn installs no signal handlers off the main thread.
        asyncio.run(self._server.serve())

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
