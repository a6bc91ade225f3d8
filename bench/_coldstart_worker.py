"""A fresh process that embeds one text in local mode, with its start-up phases timed (part 4).

The project's code is not changed: its functions are wrapped from outside, here, to record when
each phase starts and ends (wall clock, so the parent's time before it spawned this process lines
up). Phases: interpreter + imports, the backend's identity (keys), the model, the backend's
server, the proxy app and server, attestation (fetch + verify), the secret exchange, the
readiness wait, the first request.

    BENCH_T0=<time.time() before spawn> python bench/_coldstart_worker.py [--workspace DIR]

Without --workspace it runs `PrivatemodeEmbeddings.local()` (what a user runs: a new temporary
workspace, so new keys, every process); with it, `LocalStack(workspace=DIR)` keeps the keys.
Prints one JSON line of events: name -> [start, end] in seconds since BENCH_T0.
"""

from __future__ import annotations

import time

T_MAIN = time.time()

import argparse  # noqa: E402
import functools  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

EVENTS: dict[str, list[float]] = {}


def _record(name: str, start: float, end: float) -> None:
    # Server starts are numbered (1: the backend, 2: the proxy); for other phases the first
    # start is kept and a repeat (a retry) extends the end.
    if name == "server start":
        name = f"server start #{sum(k.startswith(name) for k in EVENTS) + 1}"
    if name in EVENTS:
        EVENTS[name][1] = end
    else:
        EVENTS[name] = [start, end]


def timed(owner: Any, attr: str, name: str) -> None:
    """Replace owner.attr by a wrapper that records its duration under `name`."""
    raw = inspect.getattr_static(owner, attr)
    is_static = isinstance(raw, staticmethod)
    is_class = isinstance(raw, classmethod)
    func: Callable[..., Any] = raw.__func__ if (is_static or is_class) else raw

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return await func(*args, **kwargs)
            finally:
                _record(name, start, time.time())
        wrapper: Any = awrapper
    else:
        @functools.wraps(func)
        def swrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return func(*args, **kwargs)
            finally:
                _record(name, start, time.time())
        wrapper = swrapper
    if is_static:
        wrapper = staticmethod(wrapper)
    elif is_class:
        wrapper = classmethod(wrapper)
    setattr(owner, attr, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", default=None)
    args = parser.parse_args()
    t0 = float(os.environ.get("BENCH_T0", T_MAIN))

    t_import = time.time()
    from privatemode_proxy import _session, _stack
    from privatemode_proxy.local import _app, _engine, _issuer

    from privatemode_integrations import PrivatemodeEmbeddings

    _record("imports", t_import, time.time())
    timed(_issuer.LocalIdentity, "load_or_create", "identity (keys, manifest)")
    timed(_app, "load_default_engine", "model load")
    timed(_stack, "create_proxy_app", "proxy app")
    timed(_session.UpstreamSession, "_attest", "attestation (fetch + verify)")
    timed(_session.UpstreamSession, "_exchange_once", "key exchange")
    timed(_stack.LocalStack, "_wait_ready", "wait until the proxy is ready")
    timed(_stack.ServerThread, "start", "server start")
    timed(_stack.LocalStack, "start", "local stack start (all)")
    timed(_session.UpstreamSession, "post_embeddings", "proxy -> backend (encrypted)")
    timed(_engine.MiniLMEngine, "embed", "model forward pass")

    t_build = time.time()
    if args.workspace is None:
        embeddings = PrivatemodeEmbeddings.local()
    else:
        stack = _stack.LocalStack(workspace=args.workspace).start()
        embeddings = PrivatemodeEmbeddings(model="all-minilm-l6-v2", base_url=stack.base_url)
    _record("class + local stack", t_build, time.time())
    EVENTS.pop("proxy -> backend (encrypted)", None)
    EVENTS.pop("model forward pass", None)
    t_first = time.time()
    vector = embeddings.embed_query("How long until the first embedding arrives?")
    _record("first request", t_first, time.time())
    first_upstream = EVENTS.pop("proxy -> backend (encrypted)")
    first_model = EVENTS.pop("model forward pass")
    EVENTS["first request: proxy -> backend"] = first_upstream
    EVENTS["first request: model"] = first_model
    t_second = time.time()
    embeddings.embed_query("And the second one?")
    _record("second request", t_second, time.time())
    assert len(vector) == 384
    out = {name: [s - t0, e - t0] for name, (s, e) in EVENTS.items()}
    out["interpreter start"] = [0.0, T_MAIN - t0]
    print(json.dumps(out), flush=True)
    if args.workspace is not None:
        stack.stop()
    # local(): the stack stops at exit (atexit), after the timings are out.


if __name__ == "__main__":
    main()
