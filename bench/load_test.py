"""Bounded load on loopback: N concurrent clients for T seconds through the proxy to the local
backend, with mixed batch sizes and secret rotations in the middle of the run.

    python bench/load_test.py                          # the full run: 32 clients, 30 s
    python bench/load_test.py --clients 8 --seconds 5  # the CI variant (tests/reliability)
    python bench/load_test.py --json result.json       # also write the figures as JSON

The stack (local backend + proxy, `LocalStack`) runs in a child process of its own, so its memory
is measured alone: RSS is sampled every 0.25 s from /proc, the peak is the kernel's high-water
mark (VmHWM). The clients run here, on asyncio + httpx, each in a loop: pick a batch size (1, 8,
32 or 128 inputs), pick distinct texts of a fixed corpus, ask for float or base64, and check the
answer against the engine's direct output for those texts: every vector present, in order, none
wrong or duplicated. Secrets rotate twice during the run: the proxy's own refresh (a short secret
lifetime) and, at the middle, the backend forgetting every secret (as after a restart), which
sends the in-flight requests through `no secret for ID` and one new exchange.

It measures and prints (requests/s, inputs/s, latency percentiles, RSS); `--check` makes it exit
1 when an answer was wrong or failed, or memory grew after warm-up, for the CI test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL = "all-minilm-l6-v2"
BATCH_SIZES = (1, 8, 32, 128)
BATCH_WEIGHTS = (4, 3, 2, 1)
_WORDS = (
    "the a of and to in is was for on with as by that at from it this be are an or which "
    "confidential computing enclave attestation measurement encrypted document retrieval "
    "question answer passage vector index model embedding token secret key protocol proxy "
    "server client request response report policy manifest certificate chain customer "
    "contract invoice patient record hospital bank account transfer payment quarterly revenue "
    "market growth analysis research paper experiment result method dataset training language"
).split()


def corpus(size: int, seed: int = 7) -> list[str]:
    """`size` distinct sentences of 4..40 words (numbered, so no two are alike)."""
    rng = random.Random(seed)
    texts = []
    for i in range(size):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 40))]
        texts.append(f"{i}: " + " ".join(words) + ".")
    return texts


# =============================================================================================
# The stack, in a child process
# =============================================================================================


def serve(workspace: str, secret_use_seconds: float, refresh_ahead_seconds: float) -> None:
    """Child process: run the local stack, print its URL, obey commands on stdin."""
    from privatemode_proxy import LocalStack

    stack = LocalStack(
        workspace,
        session_options={
            "secret_use_seconds": secret_use_seconds,
            "secret_refresh_ahead_seconds": refresh_ahead_seconds,
        },
    ).start()
    print(json.dumps({"proxy_url": stack.proxy_url, "pid": os.getpid()}), flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "forget":  # the backend loses every secret, as after a restart
                stack.backend.secret_store.clear()
                print(json.dumps({"forgot": True}), flush=True)
            elif command == "status":
                print(json.dumps(stack.attestation_summary()), flush=True)
    finally:
        stack.stop()


class StackProcess:
    def __init__(self, workspace: Path, secret_use_seconds: float, refresh_ahead: float) -> None:
        self._process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                "--workspace",
                str(workspace),
                "--secret-use-seconds",
                str(secret_use_seconds),
                "--refresh-ahead-seconds",
                str(refresh_ahead),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lock = threading.Lock()
        first = self._readline()
        self.proxy_url: str = first["proxy_url"]
        self.pid: int = first["pid"]

    def _readline(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the stack process ended (exit code {self._process.poll()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def command(self, command: str) -> dict[str, Any]:
        with self._lock:
            assert self._process.stdin is not None
            self._process.stdin.write(command + "\n")
            self._process.stdin.flush()
            return self._readline()

    def memory(self) -> dict[str, float]:
        """VmRSS and VmHWM (peak) of the stack process, in MiB (empty where /proc is missing)."""
        out: dict[str, float] = {}
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as handle:
                for line in handle:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "VmHWM"):
                        out[key] = int(value.split()[0]) / 1024
        except OSError:
            pass
        return out

    def stop(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


# =============================================================================================
# The clients
# =============================================================================================


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    inputs: int = 0


def check_answer(
    body: dict[str, Any], rows: list[int], reference: Any, np: Any, atol: float
) -> str | None:
    """None if `body` holds exactly the reference vectors of `rows`, in order; else why not."""
    data = body.get("data")
    if not isinstance(data, list) or len(data) != len(rows):
        return f"{len(data) if isinstance(data, list) else 'no'} vectors for {len(rows)} inputs"
    if [d.get("index") for d in data] != list(range(len(rows))):
        return "indices not 0..n-1 in order"
    vectors = []
    for item in data:
        emb = item["embedding"]
        if isinstance(emb, str):
            vectors.append(np.frombuffer(base64.b64decode(emb), dtype="<f4"))
        else:
            vectors.append(np.asarray(emb, dtype=np.float32))
    got = np.stack(vectors)
    want = reference[rows]
    if got.shape != want.shape:
        return f"shape {got.shape}, expected {want.shape}"
    worst = float(np.max(np.abs(got - want)))
    if worst > atol:
        return f"a vector differs from the reference by {worst:.2e}"
    # nearest reference row of each vector is its own: nothing swapped or duplicated
    if list(np.argmax(got @ reference.T, axis=1)) != rows:
        return "a vector is misplaced"
    return None


async def client_loop(
    url: str,
    texts: list[str],
    reference: Any,
    np: Any,
    deadline: float,
    seed: int,
    results: Results,
    atol: float,
) -> None:
    import httpx

    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(300.0)) as client:
        while time.monotonic() < deadline:
            size = rng.choices(BATCH_SIZES, BATCH_WEIGHTS)[0]
            rows = rng.sample(range(len(texts)), size)
            fmt = rng.choice(("float", "base64"))
            started = time.perf_counter()
            try:
                resp = await client.post(
                    "/v1/embeddings",
                    json={
                        "model": MODEL,
                        "input": [texts[i] for i in rows],
                        "encoding_format": fmt,
                    },
                )
            except httpx.HTTPError as exc:
                results.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - started
            if resp.status_code != 200:
                results.errors.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
                continue
            problem = check_answer(resp.json(), rows, reference, np, atol)
            if problem is not None:
                results.mismatches.append(problem)
                continue
            results.latencies.append(elapsed)
            results.batch_sizes.append(size)
            results.inputs += size


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    if len(samples) < 3:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [m for _, m in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    if den == 0:
        return 0.0
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from privatemode_proxy.local._engine import load_default_engine

    texts = corpus(args.corpus)
    print(f"reference: embedding {len(texts)} texts directly with the engine ...", flush=True)
    engine = load_default_engine()
    reference = np.concatenate([engine.embed(texts[i : i + 64]) for i in range(0, len(texts), 64)])
    del engine

    workspace = Path(args.workspace) if args.workspace else Path(tempfile.mkdtemp("-load"))
    # The proxy renews its secret on its own during the run (a short secret lifetime) ...
    use = args.warmup + args.seconds * 0.6
    stack = StackProcess(workspace, use, refresh_ahead=use - args.warmup - args.seconds * 0.3)
    try:
        print(f"stack: {stack.proxy_url} (pid {stack.pid})", flush=True)
        exchanges_before = stack.command("status")["secret_exchanges"]
        memory: list[tuple[float, float]] = []
        t0 = time.monotonic()
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(0.25):
                rss = stack.memory().get("VmRSS")
                if rss is not None:
                    memory.append((time.monotonic() - t0, rss))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rss_start = stack.memory().get("VmRSS", float("nan"))

        # Warm-up (not measured), then the measured run.
        warm = Results()
        await asyncio.gather(
            *(
                client_loop(
                    stack.proxy_url,
                    texts,
                    reference,
                    np,
                    t0 + args.warmup,
                    1000 + i,
                    warm,
                    args.atol,
                )
                for i in range(args.clients)
            )
        )
        rss_after_warmup = stack.memory().get("VmRSS", float("nan"))
        results = Results()
        start = time.monotonic()
        deadline = start + args.seconds

        async def forget_in_the_middle() -> None:
            # ... and at the middle the backend forgets every secret (as after a restart).
            if args.no_forget:
                return
            await asyncio.sleep(args.seconds * args.rotate_at)
            await asyncio.to_thread(stack.command, "forget")

        await asyncio.gather(
            forget_in_the_middle(),
            *(
                client_loop(stack.proxy_url, texts, reference, np, deadline, i, results, args.atol)
                for i in range(args.clients)
            ),
        )
        wall = time.monotonic() - start
        stop_sampling.set()
        sampler.join()
        final_memory = stack.memory()
        exchanges_after = stack.command("status")["secret_exchanges"]
    finally:
        stack.stop()
        if not args.workspace:
            shutil.rmtree(workspace, ignore_errors=True)

    after_warmup = [(t, m) for t, m in memory if t >= args.warmup + args.seconds * 0.1]
    last_quarter = [m for t, m in memory if t >= args.warmup + args.seconds * 0.75]
    first_after = [m for t, m in after_warmup[: max(1, len(after_warmup) // 4)]]
    lat = results.latencies
    return {
        "clients": args.clients,
        "seconds": round(wall, 2),
        "warmup_seconds": args.warmup,
        "requests": len(lat),
        "inputs": results.inputs,
        "errors": len(results.errors) + len(warm.errors),
        "mismatches": len(results.mismatches) + len(warm.mismatches),
        "error_samples": (results.errors + warm.errors)[:5],
        "mismatch_samples": (results.mismatches + warm.mismatches)[:5],
        "requests_per_second": round(len(lat) / wall, 2),
        "inputs_per_second": round(results.inputs / wall, 1),
        "latency_p50_ms": round(1000 * percentile(lat, 50), 1),
        "latency_p90_ms": round(1000 * percentile(lat, 90), 1),
        "latency_p99_ms": round(1000 * percentile(lat, 99), 1),
        "latency_max_ms": round(1000 * max(lat), 1) if lat else None,
        "latency_p50_ms_by_batch": {
            str(size): round(
                1000
                * percentile(
                    [x for x, b in zip(lat, results.batch_sizes, strict=True) if b == size], 50
                ),
                1,
            )
            for size in BATCH_SIZES
        },
        "secret_exchanges_during_run": exchanges_after - exchanges_before,
        "backend_forgot_secrets": not args.no_forget,
        "rss_start_mib": round(rss_start, 1),
        "rss_after_warmup_mib": round(rss_after_warmup, 1),
        "rss_first_quarter_after_warmup_mib": round(statistics.fmean(first_after), 1)
        if first_after
        else None,
        "rss_last_quarter_mib": round(statistics.fmean(last_quarter), 1) if last_quarter else None,
        "rss_end_mib": round(final_memory.get("VmRSS", float("nan")), 1),
        "rss_peak_mib": round(final_memory.get("VmHWM", float("nan")), 1),
        "rss_slope_mib_per_min_after_warmup": round(slope_per_minute(after_warmup), 2),
        "rss_series_mib": [[round(t, 1), round(m, 1)] for t, m in memory[::8]],
        "machine": {"cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--corpus", type=int, default=512, help="distinct texts to draw from")
    parser.add_argument(
        "--rotate-at",
        type=float,
        default=0.5,
        help="when the backend forgets its secrets (fraction of the run)",
    )
    parser.add_argument(
        "--no-forget", action="store_true", help="only the proxy's own secret refresh rotates"
    )
    parser.add_argument("--atol", type=float, default=1e-5, help="vector tolerance")
    parser.add_argument("--workspace", help="keeps the backend's keys (default: a temp dir)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 on any error or wrong answer, or RSS growth after warm-up over "
        "--max-growth-mib",
    )
    parser.add_argument("--max-growth-mib", type=float, default=64.0)
    # the child process
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--secret-use-seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--refresh-ahead-seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        serve(args.workspace, args.secret_use_seconds, args.refresh_ahead_seconds)
        return 0

    figures = asyncio.run(run_load(args))
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    if args.check:
        growth = (figures["rss_last_quarter_mib"] or 0) - (
            figures["rss_first_quarter_after_warmup_mib"] or 0
        )
        problems = []
        if figures["errors"] or figures["mismatches"]:
            problems.append(f"{figures['errors']} errors, {figures['mismatches']} wrong answers")
        if figures["requests"] == 0:
            problems.append("no request completed")
        if figures["secret_exchanges_during_run"] < 2:
            problems.append("the secret did not rotate during the run")
        if growth > args.max_growth_mib:
            problems.append(f"RSS grew {growth:.1f} MiB after warm-up")
        if problems:
            print("CHECK FAILED: " + "; ".join(problems), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
