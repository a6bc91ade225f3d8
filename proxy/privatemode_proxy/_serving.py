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


class ServerThread:
    """An ASGI app served by uvicorn on `host:port` from a daemon thread."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        **uvicorn_options: Any,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            app,
            host=self.host,
            port=self.port,
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
