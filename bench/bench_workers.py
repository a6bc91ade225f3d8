"""Part 7 — more cores, more throughput: `privatemode-proxy --workers N` under concurrent load.

The real CLI in front of the InstantUpstream harness (one process), once with `--workers 1` and
once with `--workers 2`, both running at the same time on their own ports; the two are measured
in alternating blocks. Each block: C client threads, each with its own keep-alive connection,
post the same 256 x 2560 base64 request for a few seconds; embeddings/s over the block, and the
CPU the proxy's processes (supervisor + workers) used per request. Medians over the blocks.

    python bench/bench_workers.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson
from _common import (
    LARGE_MODEL,
    PartResult,
    ServerProcess,
    fmt,
    load_average,
    md_table,
    median,
    text_table,
)
from bench_engine import make_texts
from privatemode_proxy._serving import free_port


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("privatemode-proxy")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "privatemode_proxy._cli"]


class CliProxy:
    def __init__(self, harness: ServerProcess, workers: int, workspace: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.proc = subprocess.Popen(
            [*_cli(), "--apiEndpoint", harness.url, "--trustedRoot", harness.info["root_pem"],
             "--manifestPath", harness.info["manifest"], "--port", str(self.port),
             "--workspace", str(workspace), "--workers", str(workers), "--log-level", "warning"],
            stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Ready when every worker has answered /healthz 'ready' (new connections spread)."""
        deadline = time.monotonic() + timeout
        ready = 0
        while ready < 4 * self.workers:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"proxy with {self.workers} workers did not get ready")
            try:
                body = httpx.get(self.url + "/healthz", timeout=5).json()
                ready = ready + 1 if body.get("upstream") == "ready" else 0
            except httpx.HTTPError:
                ready = 0
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        import psutil

        proc = psutil.Process(self.proc.pid)
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _block(proxy: CliProxy, body: bytes, inputs: int, clients: int,
           seconds: float) -> dict[str, float]:
    done = [0] * clients
    failures: list[str] = []
    stop_at = time.monotonic() + seconds

    def work(k: int) -> None:
        with httpx.Client(timeout=120.0) as client:
            while time.monotonic() < stop_at:
                response = client.post(proxy.url + "/v1/embeddings", content=body,
                                       headers={"Content-Type": "application/json"})
                if response.status_code != 200:
                    failures.append(response.text[:200])
                    return
                done[k] += 1

    cpu0 = proxy.cpu_seconds()
    start = time.monotonic()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    if failures:
        raise RuntimeError(f"requests failed: {failures[0]}")
    requests = sum(done)
    return {"emb/s": requests * inputs / wall, "cpu_ms": (proxy.cpu_seconds() - cpu0) /
            max(requests, 1) * 1e3, "requests": requests}


def run(quick: bool, repeats: int | None = None) -> PartResult:
    repeats = repeats or (2 if quick else 5)
    seconds = 3.0 if quick else 5.0
    clients = 4
    inputs = 256
    texts = make_texts(inputs, 12, seed=11)
    body = orjson.dumps({"model": LARGE_MODEL, "input": texts, "encoding_format": "base64"})
    workspace = Path(tempfile.mkdtemp(prefix="privatemode-bench-workers-"))
    loads = [load_average()]
    stats: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    try:
        with ServerProcess("_instant_upstream.py", ["--workspace", str(workspace / "h")]) as h:
            proxies = {n: CliProxy(h, n, workspace / f"p{n}") for n in (1, 2)}
            try:
                for proxy in proxies.values():
                    proxy.wait_ready()
                    _block(proxy, body, inputs, clients, 1.0)  # warm-up
                for rep in range(repeats):
                    for n in ((1, 2) if rep % 2 == 0 else (2, 1)):
                        stats[n].append(_block(proxies[n], body, inputs, clients, seconds))
                        loads.append(load_average())
                    print(f"  block {rep + 1}: " + ", ".join(
                        f"{n} worker(s) {fmt(stats[n][-1]['emb/s'])} emb/s" for n in (1, 2)),
                        flush=True)
            finally:
                for proxy in proxies.values():
                    proxy.stop()
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    med = {n: {k: median(b[k] for b in stats[n]) for k in ("emb/s", "cpu_ms")} for n in stats}
    ratio = med[2]["emb/s"] / med[1]["emb/s"]
    rows = [["--workers", "emb/s", "x of 1 worker", "proxy CPU ms/request (all processes)"]]
    for n in (1, 2):
        rows.append([str(n), fmt(med[n]["emb/s"]), f"{med[n]['emb/s'] / med[1]['emb/s']:.2f}",
                     fmt(med[n]["cpu_ms"])])
    md = [
        f"The real CLI (`privatemode-proxy --workers N`) in front of the InstantUpstream harness; "
        f"{clients} client threads, one keep-alive connection each, posting 256 x 2560 base64 "
        f"requests for {seconds:g} s per block; the 1- and 2-worker proxies run side by side "
        f"and alternate blocks; medians of {repeats} blocks. The harness, the client threads "
        "and the proxy share the machine's 2 cores (and the other engineers' load), so the "
        "proxy never has 2 cores to itself here. Load average during the part: "
        f"{min(loads):.1f}..{max(loads):.1f}.",
        "",
        md_table(rows),
    ]
    headline = [["Proxy throughput with 2 workers vs 1 (256 x 2560 base64, 4 clients)",
                 f"{fmt(med[2]['emb/s'])} emb/s", f"{fmt(med[1]['emb/s'])} emb/s, 1 worker",
                 f"{ratio:.2f}x", "close to 2x on 2 free cores", "see part 7"]]
    return PartResult("7. Worker processes", "\n".join(md), headline,
                      {"table": text_table(rows)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    print(run(args.quick, args.repeats).data["table"])


if __name__ == "__main__":
    main()

