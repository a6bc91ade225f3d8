"""Part 4 — cold start: process start to the first embedding through the proxy in local mode.

Each repetition spawns a fresh interpreter (`_coldstart_worker.py`) that runs what a user runs,
`PrivatemodeEmbeddings.local().embed_query(...)`, with the project's functions wrapped from
outside to time the phases. Two variants: a user's very first start (an empty per-user cache
directory, so the backend's keys are made) and every later one (the cache kept, keys loaded).

    python bench/bench_coldstart.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Any

from _common import BENCH_DIR, PYTHON, PartResult, fmt, load_average, md_table, median, text_table

PHASES = (
    ("interpreter start", "process spawned -> bench script runs"),
    ("imports", "import privatemode_integrations + proxy (+ LangChain core)"),
    ("identity (keys, manifest)",
     "backend identity: AMD-like chain, RSA-4096 keys (made or loaded)"),
    ("model load", "all-MiniLM-L6-v2 weights + tokenizer"),
    ("server start #1", "backend: uvicorn thread up"),
    ("proxy", "proxy app + uvicorn thread up"),
    ("attestation (fetch + verify)", "proxy: /attest + verify evidence, manifest, chain"),
    ("key exchange", "proxy: HPKE secret exchange, signature check"),
    ("ready wait", "rest of LocalStack._wait_ready (health poll every 50 ms)"),
    ("first request", "embed_query: client -> proxy -> backend -> model and back"),
    ("  of which proxy -> backend", "the proxy's encrypted upstream call (incl. the model)"),
    ("  of which model", "the engine's forward pass for the one text"),
)


def _spawn(cache_dir: str) -> dict[str, list[float]]:
    import json
    import subprocess

    argv = [PYTHON, str(BENCH_DIR / "_coldstart_worker.py")]
    env = dict(os.environ)
    env["PRIVATEMODE_CACHE_DIR"] = cache_dir  # where local() keeps the backend's keys
    env["BENCH_T0"] = repr(time.time())
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"cold-start worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    events: dict[str, list[float]] = json.loads(lines[-1])
    return events


def phases_of(ev: dict[str, list[float]]) -> dict[str, float]:
    def dur(name: str) -> float:
        s, e = ev[name]
        return e - s

    out = {
        "interpreter start": ev["interpreter start"][1],
        "imports": ev["imports"][1] - ev["interpreter start"][1],
        "identity (keys, manifest)": dur("identity (keys, manifest)"),
        "model load": dur("model load"),
        "server start #1": dur("server start #1"),
        "proxy": ev["server start #2"][1] - ev["proxy app"][0],
        "attestation (fetch + verify)": dur("attestation (fetch + verify)"),
        "key exchange": dur("key exchange"),
        "ready wait": ev["wait until the proxy is ready"][1] - max(
            ev["key exchange"][1], ev["server start #2"][1]),
        "first request": dur("first request"),
        "  of which proxy -> backend": dur("first request: proxy -> backend"),
        "  of which model": dur("first request: model"),
        "total": ev["first request"][1],
        "second request": dur("second request"),
    }
    # The attestation starts while the proxy's server thread is still coming up: overlap.
    out["overlap"] = max(0.0, ev["server start #2"][1] - ev["attestation (fetch + verify)"][0])
    return out


def measure(repeats: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"local()": [], "kept workspace": []}
    loads = []
    workspace = tempfile.mkdtemp(prefix="privatemode-bench-coldstart-")
    try:
        _spawn(workspace)  # fills the kept cache (keys) and the OS file cache (not timed)
        for rep in range(repeats):
            order = ("local()", "kept workspace") if rep % 2 == 0 else ("kept workspace", "local()")
            for variant in order:
                if variant == "local()":
                    empty = tempfile.mkdtemp(prefix="privatemode-bench-coldstart-empty-")
                    try:
                        ev = _spawn(empty)
                    finally:
                        shutil.rmtree(empty, ignore_errors=True)
                else:
                    ev = _spawn(workspace)
                runs[variant].append(phases_of(ev))
                loads.append(load_average())
            print(f"  cold start {rep + 1}/{repeats}: local() "
                  f"{fmt(runs['local()'][-1]['total'])} s, kept workspace "
                  f"{fmt(runs['kept workspace'][-1]['total'])} s", flush=True)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return {"runs": runs, "loads": loads, "repeats": repeats}


def report(results: dict[str, Any]) -> PartResult:
    runs = results["runs"]
    rows = [["phase", "what", "local() s", "kept workspace s"]]
    for key, what in PHASES:
        rows.append([key, what, fmt(median(r[key] for r in runs["local()"])),
                     fmt(median(r[key] for r in runs["kept workspace"]))])
    rows.append(["(overlap)", "attestation starting before the proxy's thread reported up",
                 "-" + fmt(median(r["overlap"] for r in runs["local()"])),
                 "-" + fmt(median(r["overlap"] for r in runs["kept workspace"]))])
    total_l = median(r["total"] for r in runs["local()"])
    total_k = median(r["total"] for r in runs["kept workspace"])
    rows.append(["**total**", "process start -> first embedding", f"**{fmt(total_l)}**",
                 f"**{fmt(total_k)}**"])
    rows.append(["second request", "for comparison: the next embed_query",
                 fmt(median(r["second request"] for r in runs["local()"])),
                 fmt(median(r["second request"] for r in runs["kept workspace"]))])
    loads = results["loads"]
    md = [
        f"Medians of {results['repeats']} fresh processes per variant (alternating). Phases are "
        "timed by wrapping the project's functions from outside (`LocalIdentity.load_or_create`, "
        "`load_default_engine`, `ServerThread.start`, `create_proxy_app`, "
        "`UpstreamSession._attest` / `_exchange_once`, `LocalStack._wait_ready`); the phases "
        "add up to the total up to small gaps. Both run `PrivatemodeEmbeddings.local()`; "
        "'local()' with an empty per-user cache directory (a user's first start: new keys), "
        "'kept workspace' with the cache of an earlier run (every later start: keys loaded).",
        f"Load average during the part: {min(loads):.1f}..{max(loads):.1f} (2 cores).",
        "",
        md_table(rows),
    ]
    headline = [["Cold start to first embedding, local mode (`local()`)", f"{fmt(total_l)} s",
                 f"{fmt(total_k)} s with the per-user cache kept", "-", "-", "-"]]
    return PartResult("4. Cold start (local mode)", "\n".join(md), headline,
                      {"table": text_table([[c.replace("**", "") for c in r] for r in rows])})


def run(quick: bool, repeats: int | None = None) -> PartResult:
    results = measure(repeats or (2 if quick else 7))
    part = report(results)
    print(part.data["table"])
    return part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    run(args.quick, args.repeats)


if __name__ == "__main__":
    main()
