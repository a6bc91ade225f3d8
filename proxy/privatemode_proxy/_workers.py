"""Serving one listening socket from several worker processes (`privatemode-proxy --workers N`).

All of a request's CPU work (decrypting, decoding, encoding, HTTP on both legs) runs on one event
loop, so one process uses one core. With N workers the kernel hands each new connection to one
of N processes accepting on the same socket, and N cores serve about N times as much.

Each worker is a full proxy: it attests the upstream and exchanges its own secrets, exactly as a
single proxy does, and serves nothing before that succeeded. Workers share no key material: a
shared secret would have to be handed between processes (a pipe or shared memory holding the AES
key) and its renewal coordinated, which is more code on the security-critical path than N
attestations at start and N exchanges per 45 minutes cost. A worker's secret never leaves it.

Workers are forked from the supervisor after the socket is bound and before anything starts a
thread or an event loop (forking a threaded process is unsafe), and re-forked if one dies. Rate
limits are per process, so each worker gets an equal share of the key's budget: together they
never exceed it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

from privatemode_proxy._pacing import RateLimits

logger = logging.getLogger(__name__)

RESTART_PAUSE_SECONDS = 1.0
"""A worker that died is replaced after this pause (a crash loop costs at most one fork/s)."""


def share_rate_limits(limits: RateLimits | None, workers: int) -> RateLimits | None:
    """One worker's share of the key's budget; `ValueError` when a share would be empty."""
    if limits is None or workers == 1:
        return limits
    requests = tokens = None
    if limits.requests is not None:
        if limits.requests < workers:
            raise ValueError(
                f"--workers {workers}: each worker paces its own share of the rate limit, and "
                f"{limits.requests} requests per window can't be shared by {workers} workers; "
                "use fewer workers"
            )
        requests = limits.requests // workers
    if limits.tokens is not None:
        tokens = max(1, limits.tokens // workers)
    return dataclasses.replace(limits, requests=requests, tokens=tokens)


def serve_in_workers(workers: int, serve: Callable[[int], None]) -> int:
    """Run `serve(worker_number)` in `workers` forked processes until told to stop.

    SIGINT/SIGTERM stop the workers (uvicorn in each shuts down gracefully) and then return 0.
    """
    children: dict[int, int] = {}  # pid -> worker number
    stopping = False
    supervisor = os.getpid()

    def start(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                serve(number)
            except KeyboardInterrupt:
                pass
            except BaseException:
                logger.exception("worker %d failed", number)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = number

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if os.getpid() != supervisor:  # a worker between fork and its own handlers: not ours
            raise KeyboardInterrupt
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for number in range(workers):
            start(number)
        logger.info("serving with %d worker processes", workers)
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:  # pragma: no cover - no children left
                break
            except InterruptedError:  # pragma: no cover - retried by Python itself
                continue
            number = children.pop(pid, -1)
            if stopping or number < 0:
                continue
            logger.error(
                "worker %d exited (%s); starting another",
                number,
                _describe_status(status),
            )
            time.sleep(RESTART_PAUSE_SECONDS)
            if not stopping:
                start(number)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
