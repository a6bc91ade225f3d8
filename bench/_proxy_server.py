"""The real proxy (`create_proxy_app`) served for a benchmark, in a process of its own.

Either in front of an external upstream (the InstantUpstream harness: `--upstream URL --root PEM
--manifest JSON`), or in front of the real local backend started in this same process
(`--local-backend WORKSPACE`, as `LocalStack` arranges them: the backend on a `ServerThread`,
token counts with the backend's own tokenizer).

The proxy's uvicorn runs on this process's main thread, so that pyinstrument (which samples the
thread it is started on) sees the whole event loop. A thin counting wrapper (benchmark code, not
part of the proxy) records each request's path and answers:

- GET  /_bench/counts          {"proxy": {path: n}, "upstream": {path: n} (local backend only)}
- POST /_bench/reset           clears both
- POST /_bench/profile/start   starts pyinstrument on the event loop's thread
- POST /_bench/profile/stop?label=NAME   stops it, writes NAME.txt (and NAME.html with
                                --profile-html) into --profile-dir and answers a JSON summary
                                (self time by function and by package)

It prints one JSON line ({"url": ...}) once it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from _common import exit_with_parent
from privatemode_proxy import (
    BatchLimits,
    ProxyConfig,
    SessionConfig,
    create_proxy_app,
    pinned_manifest,
)
from privatemode_proxy._serving import free_port
from privatemode_proxy.attestation import load_trusted_root
from privatemode_proxy.local._requestlog import RequestLog
from starlette.types import Receive, Scope, Send


def _package_of(path: str) -> str:
    """A short label for where a frame's code lives (site-packages name or project module)."""
    if not path:
        return "?"
    if "privatemode_proxy" in path:
        tail = path.split("privatemode_proxy", 1)[1].strip("/")
        return "privatemode_proxy/" + tail
    if "site-packages" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/lib/python3" in path:
        parts = path.split("/lib/python3", 1)[1].split("/")
        return "stdlib:" + (parts[1] if len(parts) > 1 else "?")
    return Path(path).name


def summarize_profile(session: Any, top: int = 25) -> dict[str, Any]:
    """Self time per function and per place in the code, from a pyinstrument session.

    Built-in (C) functions are charged to the package of the Python code that called them, so
    `orjson.dumps` called from the proxy's server module counts for that module; the event loop
    waiting in epoll is reported apart as idle time.
    """
    root = session.root_frame()
    by_function: dict[str, float] = defaultdict(float)
    by_package: dict[str, float] = defaultdict(float)
    idle = 0.0

    def walk(frame: Any, caller: str) -> None:
        nonlocal idle
        if frame.is_synthetic:
            return
        path = frame.file_path or ""
        builtin = not path or path.startswith("<")
        where = caller if builtin else _package_of(path)
        name = frame.function or "?"
        self_time = float(frame.total_self_time)
        if self_time > 0:
            # The selector (epoll and the selectors module around it) is the loop waiting for
            # I/O; samples right after a wait also land in its Python frames.
            if "selectors" in where:
                idle += self_time
                by_package["(idle: waiting in epoll)"] += self_time
            else:
                by_package[where] += self_time
                by_function[f"{name} [{where}{'' if builtin else f':{frame.line_no}'}]"] += \
                    self_time
        for child in frame.children:
            walk(child, where)

    if root is not None:
        walk(root, "?")
    functions = sorted(by_function.items(), key=lambda kv: -kv[1])[:top]
    packages = sorted(by_package.items(), key=lambda kv: -kv[1])[:top]
    return {
        "duration_s": float(session.duration),
        "cpu_s": float(getattr(session, "cpu_time", float("nan"))),
        "sample_count": int(session.sample_count),
        "idle_s": idle,
        "by_function": functions,
        "by_package": packages,
    }


class BenchWrapper:
    """Counts requests by path and serves the /_bench/* endpoints; everything else to the proxy."""

    def __init__(self, app: Any, backend: Any, profile_dir: Path | None,
                 interval: float, html: bool = False) -> None:
        self.app = app
        self.html = html
        self.backend = backend
        self.log = RequestLog()
        self.profile_dir = profile_dir
        self.interval = interval
        self.profiler: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path.startswith("/_bench/"):
                query = scope.get("query_string", b"").decode()
                body = self._bench(path, query)
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
            self.log.record(path)
        await self.app(scope, receive, send)

    def _bench(self, path: str, query: str) -> bytes:
        if path == "/_bench/counts":
            counts: dict[str, Any] = {"proxy": self.log.snapshot()}
            if self.backend is not None:
                counts["upstream"] = self.backend.request_log.snapshot()
            return orjson.dumps(counts)
        if path == "/_bench/reset":
            self.log.clear()
            if self.backend is not None:
                self.backend.request_log.clear()
            return b"{}"
        if path == "/_bench/profile/start":
            from pyinstrument import Profiler

            self.profiler = Profiler(interval=self.interval, async_mode="disabled")
            self.profiler.start()
            return b"{}"
        if path == "/_bench/profile/stop":
            label = query.partition("label=")[2] or "proxy"
            profiler, self.profiler = self.profiler, None
            if profiler is None:
                return b'{"error": "not profiling"}'
            session = profiler.stop()
            summary = summarize_profile(session)
            if self.profile_dir is not None:
                self.profile_dir.mkdir(parents=True, exist_ok=True)
                (self.profile_dir / f"{label}.txt").write_text(
                    profiler.output_text(unicode=True, color=False), encoding="utf-8")
                if self.html:
                    (self.profile_dir / f"{label}.html").write_text(profiler.output_html(),
                                                                    encoding="utf-8")
            return orjson.dumps(summary)
        return b'{"error": "unknown"}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--upstream", help="the upstream's base URL (the harness)")
    parser.add_argument("--root", type=Path, help="trusted root PEM of the upstream")
    parser.add_argument("--manifest", type=Path, help="manifest to pin")
    parser.add_argument("--local-backend", type=Path, metavar="WORKSPACE",
                        help="start the real local backend in this process and proxy to it")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--profile-dir", type=Path, default=None)
    parser.add_argument("--profile-interval", type=float, default=0.0005)
    parser.add_argument("--profile-html", action="store_true",
                        help="also write pyinstrument's HTML view (several MB per profile)")
    args = parser.parse_args()
    exit_with_parent()

    import uvicorn

    backend = None
    counters = None
    if args.local_backend is not None:
        from privatemode_proxy.local import LocalBackend

        backend = LocalBackend(args.local_backend).start()
        api_url, root, manifest = backend.url, backend.root_pem_path, backend.manifest_path
        counters = {backend.model_id: backend.engine.count_tokens}
    else:
        if not (args.upstream and args.root and args.manifest):
            parser.error("give --upstream, --root and --manifest, or --local-backend")
        api_url, root, manifest = args.upstream, args.root, args.manifest
    session = SessionConfig(
        api_url=api_url,
        trusted_roots=tuple(load_trusted_root(Path(root))),
        manifest=pinned_manifest(Path(manifest).read_bytes()),
    )
    config = ProxyConfig(session=session, limits=BatchLimits(), local_mode=backend is not None,
                         token_counters=counters)
    app = BenchWrapper(create_proxy_app(config), backend, args.profile_dir,
                       args.profile_interval, args.profile_html)
    port = args.port or free_port(args.host)
    uv_config = uvicorn.Config(app, host=args.host, port=port, log_level="warning",
                               access_log=False, lifespan="on")
    server = uvicorn.Server(uv_config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.01)
        print(json.dumps({"url": f"http://{args.host}:{port}", "upstream": api_url,
                          "http": uv_config.http_protocol_class.__name__,
                          "loop": type(asyncio.get_running_loop()).__module__}),
              flush=True)
        await task

    try:
        # uvicorn's own choice of event loop (uvloop when importable), as `uvicorn.run` makes it.
        with asyncio.Runner(loop_factory=uv_config.get_loop_factory()) as runner:
            runner.run(serve())
    finally:
        if backend is not None:
            backend.stop()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
