"""Part 5 — scale: time and peak memory from 1k to 100k short documents, LangChain class.

`PrivatemodeEmbeddings(...).embed_documents(texts)` in a fresh process per run, through the real
proxy, in front of the InstantUpstream benchmark harness (fixed vectors; the local model would
need most of an hour for 100k documents on this machine). So the time is the client's and the
proxy's, not a model's. Peak RSS is the process's VmHWM; the result's size is computed from the
objects LangChain's interface returns (lists of Python floats).

    python bench/bench_scale.py [--quick] [--sizes 1000 10000 100000]
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import (
    BENCH_DIR,
    LOCAL_MODEL,
    PYTHON,
    PartResult,
    fmt,
    load_average,
    md_table,
    median,
    run_json,
    spread,
    text_table,
)
from _stacks import InstantStack

DIMS = 384


def measure(sizes: list[int], repeats: int, client: str = "ours-langchain") -> dict[str, Any]:
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    loads = []
    with InstantStack() as stack:
        run_json([PYTHON, str(BENCH_DIR / "_client_worker.py"), "--client", client,
                  "--base-url", stack.proxy_base_url, "--docs", "64"])  # warm-up
        for rep in range(repeats):
            for n in (sizes if rep % 2 == 0 else list(reversed(sizes))):
                stack.reset_counts()
                result = run_json([PYTHON, str(BENCH_DIR / "_client_worker.py"), "--client",
                                   client, "--base-url", stack.proxy_base_url, "--model",
                                   LOCAL_MODEL, "--docs", str(n)])
                counts = stack.counts()
                result["requests"] = counts["proxy"].get("/v1/embeddings", 0)
                result["upstream_requests"] = counts["upstream"].get("/v1/embeddings", 0)
                runs[n].append(result)
                loads.append(load_average())
                print(f"  {n:,} docs: {fmt(result['seconds'])} s, peak RSS "
                      f"{fmt(result['peak_rss'] / 2**20)} MB", flush=True)
        # One run with tracemalloc: the Python-level peak (allocations Python and numpy make),
        # to compare with the RSS growth (which also holds allocator slack).
        traced_n = sizes[len(sizes) // 2]
        traced = run_json([PYTHON, str(BENCH_DIR / "_client_worker.py"), "--client", client,
                           "--base-url", stack.proxy_base_url, "--model", LOCAL_MODEL,
                           "--docs", str(traced_n), "--tracemalloc"])
    return {"runs": runs, "loads": loads, "repeats": repeats, "traced": traced}


def report(results: dict[str, Any]) -> PartResult:
    runs: dict[int, list[dict[str, Any]]] = results["runs"]
    sizes = sorted(runs)
    # A line time = fixed + per_doc * n, fitted to relative error (weights 1/time²) so the
    # small sizes count as much as the large one; then each size's deviation from it.
    xs = [float(n) for n in sizes]
    ys = [median(r["seconds"] for r in runs[n]) for n in sizes]
    ws = [1.0 / (y * y) for y in ys]
    sw = sum(ws)
    swx = sum(w * x for w, x in zip(ws, xs, strict=True))
    swy = sum(w * y for w, y in zip(ws, ys, strict=True))
    swxx = sum(w * x * x for w, x in zip(ws, xs, strict=True))
    swxy = sum(w * x * y for w, x, y in zip(ws, xs, ys, strict=True))
    slope = (sw * swxy - swx * swy) / (sw * swxx - swx * swx)
    fixed = (swy - slope * swx) / sw
    marginal = [(ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]) * 1e6 for i in range(len(xs) - 1)]
    rows = [["docs", "time s", "range s", "µs/doc", "time / linear fit", "requests",
             "RSS before MB", "peak RSS MB", "growth MB", "growth KB/doc",
             "result lists MB", "numpy result MB", "texts MB"]]
    for n in sizes:
        rs = runs[n]
        seconds = median(r["seconds"] for r in rs)
        before = median(r["rss_before"] for r in rs) / 2**20
        peak = median(r["peak_rss"] for r in rs) / 2**20
        growth = peak - before
        rows.append([
            f"{n:,}", fmt(seconds), spread([r["seconds"] for r in rs]), fmt(seconds / n * 1e6),
            f"{seconds / (fixed + slope * n):.2f}", str(rs[0]["requests"]),
            fmt(before), fmt(peak), fmt(growth), fmt(growth * 1024 / n),
            fmt(rs[0]["result_bytes"] / 2**20), fmt(n * DIMS * 4 / 2**20),
            fmt(rs[0]["texts_bytes"] / 2**20),
        ])
    big = sizes[-1]
    rb = runs[big][0]
    loads = results["loads"]
    growth_big = (median(r["peak_rss"] for r in runs[big])
                  - median(r["rss_before"] for r in runs[big])) / 2**20
    result_mb = rb["result_bytes"] / 2**20
    md = [
        f"Medians of {results['repeats']} runs per size (fresh process each, sizes in "
        "alternating order), through the real proxy to the InstantUpstream harness "
        f"(all-minilm-l6-v2 shape, {DIMS} dimensions). 'time / linear fit' is the time divided "
        "by a line fitted to all sizes by relative error (1.00 = on the line). 'result lists' is "
        "the "
        "size of what `embed_documents` returns (list of lists of Python floats, 24 B per float "
        "+ 8 B per slot); 'numpy result' the float32 matrix the client core builds first.",
        f"Load average during the part: {min(loads):.1f}..{max(loads):.1f} (2 cores).",
        "",
        md_table(rows),
        "",
        f"Linear fit: time = {fmt(fixed)} s + {fmt(slope * 1e6)} µs x docs (the fixed part: "
        "process-local client setup, the one /v1/models lookup, the first connection). "
        "Marginal cost between consecutive sizes: "
        + ", ".join(f"{sizes[i]:,}->{sizes[i + 1]:,}: {fmt(m)} µs/doc"
                    for i, m in enumerate(marginal)) + ".",
        "",
        f"Where the memory goes at {big:,} documents: the peak grows by {fmt(growth_big)} MB over "
        f"the RSS before the call; the returned lists alone are {fmt(result_mb)} MB "
        f"({fmt(result_mb / max(growth_big, 1e-9) * 100)} % of the growth), the float32 matrix "
        f"they are made from {fmt(big * DIMS * 4 / 2**20)} MB (alive during `.tolist()`), the "
        "rest is in-flight responses (at most `max_concurrency` = 4 requests of 2,048 vectors, "
        "a fixed amount) and memory the C allocator keeps after the per-request arrays and "
        "response bodies are freed (a few KB per document). Per document that is ~12 KB of "
        "Python floats for LangChain's `list[list[float]]` interface, 1.5 KB of float32, and "
        "the slack; `EmbeddingsClient.embed` (numpy) avoids the first.",
    ]
    traced = results.get("traced")
    if traced and traced["docs"] in runs:
        n = traced["docs"]
        untraced_growth = (median(r["peak_rss"] for r in runs[n])
                           - median(r["rss_before"] for r in runs[n])) / 2**20
        md.append("")
        md.append(
            f"One extra run at {n:,} documents with tracemalloc: the Python-level peak "
            f"(everything Python and numpy allocate) is {fmt(traced['traced_peak'] / 2**20)} MB: "
            f"the result lists {fmt(traced['result_bytes'] / 2**20)} MB + the float32 matrix "
            f"{fmt(n * DIMS * 4 / 2**20)} MB + a few MB in flight. The untraced runs' RSS grows "
            f"by {fmt(untraced_growth)} MB at that size; the difference is what the C allocator "
            "keeps after Python freed it.")
    worst = max(abs(y / (fixed + slope * x) - 1) for x, y in zip(xs, ys, strict=True))
    head_time = [f"Scale, LangChain class, {sizes[0]:,} -> {big:,} docs (instant upstream)",
                 f"{fmt(fixed)} s + {fmt(slope * 1e6)} µs/doc",
                 f"{fmt(ys[0])} s at {sizes[0]:,}, {fmt(ys[-1])} s at {big:,}",
                 f"max {worst:.0%} off the line", "linear",
                 "yes" if worst <= 0.25 else "no"]
    head_mem = [f"Peak RSS at {big:,} docs (LangChain class)",
                f"{fmt(median(r['peak_rss'] for r in runs[big]) / 2**20)} MB",
                f"result lists {fmt(result_mb)} MB", "-", "-", "-"]
    return PartResult("5. Scale (LangChain class, 1k -> 100k documents)", "\n".join(md),
                      [head_time, head_mem], {"table": text_table(rows)})


def run(quick: bool, sizes: list[int] | None = None, repeats: int | None = None) -> PartResult:
    sizes = sizes or ([1000, 10000, 30000] if quick else [1000, 3000, 10000, 30000, 100000])
    results = measure(sorted(sizes), repeats or (1 if quick else 3))
    part = report(results)
    print(part.data["table"])
    return part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    run(args.quick, args.sizes, args.repeats)


if __name__ == "__main__":
    main()
