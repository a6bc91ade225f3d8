"""Probes of issue 13: one misbehaving client (or a crowd) against the local stack, measured.

Each probe starts the stack (local backend + proxy, `_hardening_stack.py`) in a child process
of its own, so its memory is measured alone, and prints what it saw: statuses, latencies of a
well-behaved client meanwhile, the stack's peak RSS (VmHWM, reset before the probe), and how long
the backend kept working. `--code DIR` runs the stack from another checkout (for before/after).

    python bench/bench_hardening.py                       # every probe, default sizes
    python bench/bench_hardening.py --probe crowd --clients 2000
    python bench/bench_hardening.py --code /tmp/old-checkout --probe oversized
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import ServerProcess

MODEL = "all-minilm-l6-v2"
MIB = 1024 * 1024


class Stack:
    def __init__(self, code: str | None, nofile: int = 0) -> None:
        self.stats_file = Path(tempfile.mkdtemp(prefix="pm-harden-stats-")) / "stats.json"
        env = {}
        if code:
            env["PYTHONPATH"] = f"{code}:{code}/proxy"
        args = ["--stats", str(self.stats_file)]
        if nofile:
            args += ["--nofile", str(nofile)]
        self.proc = ServerProcess("_hardening_stack.py", args, env=env, timeout=300)
        self.url = self.proc.url
        self.backend = self.proc.info["backend"]
        while not self.stats_file.exists():
            time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        for _ in range(50):
            try:
                return dict(json.loads(self.stats_file.read_text()))
            except (OSError, ValueError):
                time.sleep(0.02)
        raise RuntimeError("no stats")

    def reset_peak(self) -> int:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        time.sleep(0.3)
        return int(self.stats()["VmRSS"])

    def stop(self) -> None:
        self.proc.stop()


def mib(n: float) -> str:
    return f"{n / MIB:,.0f} MiB"


class Bystander:
    """A well-behaved client sending one short input at a time; its latencies while a probe runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=600) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    resp = client.post(self.url + "/v1/embeddings",
                                       json={"model": MODEL, "input": "a bystander's question"})
                    self.statuses[resp.status_code] += 1
                except httpx.HTTPError:
                    self.statuses[0] += 1
                self.latencies.append(time.perf_counter() - started)
                self._stop.wait(0.1)

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(700)

    def summary(self) -> str:
        if not self.latencies:
            return "bystander: no answer"
        return (f"bystander: {len(self.latencies)} requests {dict(self.statuses)}, "
                f"max {max(self.latencies):.2f} s, "
                f"median {statistics.median(self.latencies):.3f} s")


def _chunks(head: bytes, size: int, tail: bytes) -> Iterator[bytes]:
    yield head
    sent = 0
    block = b"a" * MIB
    while sent < size:
        yield block
        sent += len(block)
    yield tail


def probe_oversized(stack: Stack, args: argparse.Namespace) -> str:
    base = stack.reset_peak()
    text = "word " * (args.text_mib * MIB // 5)
    with Bystander(stack.url) as bystander:
        time.sleep(1.0)
        started = time.perf_counter()
        resp = httpx.post(stack.url + "/v1/embeddings", json={"model": MODEL, "input": text},
                          timeout=900)
        elapsed = time.perf_counter() - started
        time.sleep(1.0)
    del text
    peak = stack.stats()["VmHWM"] - base
    time.sleep(2.0)
    held = stack.stats()["VmRSS"] - base
    return (f"oversized {args.text_mib} MiB input: HTTP {resp.status_code} after {elapsed:.2f} s; "
            f"{bystander.summary()}; peak +{mib(peak)}, held after +{mib(held)}")


def probe_chunked(stack: Stack, args: argparse.Namespace) -> str:
    base = stack.reset_peak()
    body = _chunks(b'{"model": "' + MODEL.encode() + b'", "input": ["', args.body_mib * MIB, b'"]}')
    started = time.perf_counter()
    try:
        resp = httpx.post(stack.url + "/v1/embeddings", content=body,
                          headers={"content-type": "application/json"}, timeout=900)
        status = str(resp.status_code)
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    elapsed = time.perf_counter() - started
    peak = stack.stats()["VmHWM"] - base
    return (f"chunked {args.body_mib} MiB body: {status} after {elapsed:.2f} s; "
            f"peak +{mib(peak)}")


def probe_inputs(stack: Stack, args: argparse.Namespace) -> str:
    base = stack.reset_peak()
    started = time.perf_counter()
    try:
        resp = httpx.post(stack.url + "/v1/embeddings",
                          json={"model": MODEL, "input": ["a few words"] * args.inputs},
                          timeout=args.inputs_timeout)
        status = f"HTTP {resp.status_code}, answer {mib(len(resp.content))}"
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    elapsed = time.perf_counter() - started
    peak = stack.stats()["VmHWM"] - base
    return f"{args.inputs:,} inputs: {status} after {elapsed:.2f} s; peak +{mib(peak)}"


def _wait_idle(stack: Stack, quiet: float = 2.0, limit: float = 300.0) -> tuple[float, int]:
    """Seconds until the backend embedded nothing for `quiet` s, and texts embedded meanwhile."""
    start = time.monotonic()
    first = last = stack.stats()["texts"]
    last_change = start
    while time.monotonic() - last_change < quiet and time.monotonic() - start < limit:
        time.sleep(0.1)
        now = stack.stats()["texts"]
        if now != last:
            last, last_change = now, time.monotonic()
    return last_change - start, last - first


def probe_disconnect(stack: Stack, args: argparse.Namespace) -> str:
    texts = [f"text number {i} about something else entirely" for i in range(args.inputs_gone)]
    try:
        httpx.post(stack.url + "/v1/embeddings", json={"model": MODEL, "input": texts},
                   timeout=args.gone_after)
    except httpx.TimeoutException:
        pass  # the client gives up and closes its connection
    busy, embedded = _wait_idle(stack)
    return (f"client of {args.inputs_gone:,} inputs gone after {args.gone_after:.0f} s: backend "
            f"busy {busy:.1f} s more, embedded {embedded:,} texts for nobody")


def _healthz_prober(url: str, stop_file: str) -> None:
    """Child process: GET /healthz every 0.25 s until `stop_file` exists; print latencies."""
    latencies: list[float] = []
    with httpx.Client(timeout=120) as client:
        while not Path(stop_file).exists():
            started = time.perf_counter()
            try:
                client.get(url + "/healthz")
            except httpx.HTTPError:
                pass
            latencies.append(time.perf_counter() - started)
            time.sleep(0.25)
    print(json.dumps(latencies), flush=True)


def probe_crowd(stack: Stack, args: argparse.Namespace) -> str:
    """Many clients at once; /healthz latency measured by a process of its own (the clients'
    event loop would otherwise delay the probe itself)."""
    import subprocess

    stop_file = Path(tempfile.mkdtemp()) / "stop"
    prober = subprocess.Popen(
        [sys.executable, __file__, "--healthz-prober", stack.url, str(stop_file)],
        stdout=subprocess.PIPE, text=True,
    )

    async def run() -> str:
        limits = httpx.Limits(max_connections=args.clients + 10, max_keepalive_connections=0)
        statuses: Counter[str] = Counter()
        done_at: list[float] = []
        async with httpx.AsyncClient(limits=limits, timeout=600) as client:
            t0 = time.perf_counter()

            async def one(i: int) -> None:
                try:
                    resp = await client.post(stack.url + "/v1/embeddings",
                                             json={"model": MODEL, "input": f"client {i}"})
                    statuses[str(resp.status_code)] += 1
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                done_at.append(time.perf_counter() - t0)

            await asyncio.gather(*(one(i) for i in range(args.clients)))
        return (f"{args.clients} concurrent clients: {dict(statuses)}; first answer "
                f"{min(done_at):.1f} s, last {max(done_at):.1f} s")

    time.sleep(1.0)
    result = asyncio.run(run())
    stop_file.touch()
    out, _ = prober.communicate(timeout=300)
    health = json.loads(out)
    return (f"{result}; /healthz max {max(health):.2f} s, median "
            f"{statistics.median(health):.3f} s ({len(health)} probes)")


def probe_slowloris(stack: Stack, args: argparse.Namespace) -> str:
    host, port = stack.url.removeprefix("http://").split(":")
    held: list[socket.socket] = []
    refused = 0
    for _ in range(args.slow_clients):
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect((host, int(port)))
            sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            held.append(sock)
        except OSError:
            refused += 1
            sock.close()
    started = time.perf_counter()
    reached = None
    while time.perf_counter() - started < args.slow_wait:
        try:
            resp = httpx.get(stack.url + "/healthz", timeout=5)
            if resp.status_code == 200:
                reached = time.perf_counter() - started
                break
        except httpx.HTTPError:
            pass
    for sock in held:
        sock.close()
    where = f"reached after {reached:.2f} s" if reached is not None else (
        f"NOT reachable within {args.slow_wait:.0f} s")
    return (f"{len(held)} half-sent requests held ({refused} connects failed) at ulimit -n "
            f"{args.nofile}: /healthz {where}")


def probe_local_bodies(stack: Stack, args: argparse.Namespace) -> str:
    base = stack.reset_peak()
    results: Counter[str] = Counter()

    def one() -> None:
        body = _chunks(b'{"model": "' + MODEL.encode() + b'", "input": "', args.local_mib * MIB,
                       b'"}')
        try:
            resp = httpx.post(stack.backend + "/v1/embeddings", content=body, timeout=900,
                              headers={"content-type": "application/json"})
            results[str(resp.status_code)] += 1
        except httpx.HTTPError as exc:
            results[type(exc).__name__] += 1

    threads = [threading.Thread(target=one) for _ in range(args.local_bodies)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    peak = stack.stats()["VmHWM"] - base
    time.sleep(2)
    held = stack.stats()["VmRSS"] - base
    return (f"{args.local_bodies} x {args.local_mib} MiB bodies to the local backend: "
            f"{dict(results)} in {elapsed:.1f} s; peak +{mib(peak)}, held after +{mib(held)}")


PROBES: dict[str, Callable[[Stack, argparse.Namespace], str]] = {
    "oversized": probe_oversized,
    "chunked": probe_chunked,
    "inputs": probe_inputs,
    "disconnect": probe_disconnect,
    "crowd": probe_crowd,
    "slowloris": probe_slowloris,
    "local-bodies": probe_local_bodies,
}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--healthz-prober":
        _healthz_prober(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", action="append", choices=sorted(PROBES))
    parser.add_argument("--code", help="checkout whose proxy/backend to run (default: this one)")
    parser.add_argument("--text-mib", type=int, default=20)
    parser.add_argument("--body-mib", type=int, default=256)
    parser.add_argument("--inputs", type=int, default=20_000)
    parser.add_argument("--inputs-timeout", type=float, default=600)
    parser.add_argument("--inputs-gone", type=int, default=4000)
    parser.add_argument("--gone-after", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--slow-clients", type=int, default=1124)
    parser.add_argument("--slow-wait", type=float, default=60.0)
    parser.add_argument("--nofile", type=int, default=1024)
    parser.add_argument("--local-bodies", type=int, default=16)
    parser.add_argument("--local-mib", type=int, default=60)
    args = parser.parse_args()
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"# code: {args.code or 'this checkout'}; load average {os.getloadavg()[0]:.1f}")
    for name in args.probe or list(PROBES):
        stack = Stack(args.code, nofile=args.nofile if name == "slowloris" else 0)
        try:
            print(f"{name}: {PROBES[name](stack, args)}", flush=True)
        except Exception as exc:  # a probe that breaks the stack is a result too
            print(f"{name}: probe failed: {type(exc).__name__}: {exc}", flush=True)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
