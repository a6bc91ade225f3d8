"""Part 2 — the client classes vs the anchors, through the real proxy.

PrivatemodeEmbeddings vs langchain-openai OpenAIEmbeddings(check_embedding_ctx_length=False), and
PrivatemodeEmbedding vs llama-index OpenAIEmbedding(model_name=...), each with its defaults,
embedding N short documents (~12 words). Each run is a fresh process (`_client_worker.py`), so
peak RSS is that client's alone; the servers run in processes of their own. Requests are counted
at the proxy (what the client sent) and at the upstream (what the proxy sent on).

Two upstreams:
- the real local backend (the model, all-minilm-l6-v2 on this machine's CPU) — the wall time is
  mostly the model's, which every client waits for alike;
- the InstantUpstream benchmark harness (fixed vectors) behind the same real proxy — the wall time
  is the clients' and the proxy's own. The 20,000-document case runs only here: the local model
  needs minutes per run on this 2-core machine.

    python bench/bench_clients.py [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
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
    text_table,
)
from _stacks import InstantStack, LocalModelStack

PAIRS = (
    ("LangChain", "ours-langchain", "openai-langchain",
     "PrivatemodeEmbeddings", "OpenAIEmbeddings"),
    ("LlamaIndex", "ours-llamaindex", "openai-llamaindex",
     "PrivatemodeEmbedding", "OpenAIEmbedding"),
)


def _run_client(client: str, stack: Any, docs: int,
                reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run in a fresh process; `reference` holds the first run's vectors of this row, to
    compare the others with."""
    stack.reset_counts()
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "vectors.npy"
        result = run_json([PYTHON, str(BENCH_DIR / "_client_worker.py"), "--client", client,
                           "--base-url", stack.proxy_base_url, "--model", LOCAL_MODEL,
                           "--docs", str(docs), "--save", str(saved)])
        vectors = np.load(saved)
    if reference is not None:
        if "vectors" not in reference:
            reference["vectors"] = vectors
        result["max_abs_diff"] = float(np.max(np.abs(vectors - reference["vectors"])))
    counts = stack.counts()
    result["proxy_embeddings"] = counts["proxy"].get("/v1/embeddings", 0)
    result["proxy_other"] = sum(n for p, n in counts["proxy"].items()
                                if p != "/v1/embeddings" and not p.startswith("/_bench"))
    result["upstream_embeddings"] = counts.get("upstream", {}).get("/v1/embeddings", 0)
    return result


def measure(setups: list[tuple[str, list[int], int]]) -> dict[str, Any]:
    results: dict[str, Any] = {"rows": [], "loads": []}
    for upstream, doc_counts, repeats in setups:
        stack_cls = LocalModelStack if upstream == "local model" else InstantStack
        with stack_cls() as stack:
            _run_client("ours-langchain", stack, 64)  # warm-up: tokenizer, connections, caches
            for docs in doc_counts:
                for framework, ours, anchor, ours_name, anchor_name in PAIRS:
                    runs: dict[str, list[dict[str, Any]]] = {ours: [], anchor: []}
                    reference: dict[str, Any] = {}
                    for rep in range(repeats):
                        order = (ours, anchor) if rep % 2 == 0 else (anchor, ours)
                        for client in order:
                            runs[client].append(_run_client(client, stack, docs, reference))
                            results["loads"].append(load_average())
                    row = {"upstream": upstream, "docs": docs, "framework": framework,
                           "ours_name": ours_name, "anchor_name": anchor_name,
                           "ours": runs[ours], "anchor": runs[anchor], "repeats": repeats}
                    results["rows"].append(row)
                    print(f"  {upstream}, {docs} docs, {framework}: ours "
                          f"{fmt(median(r['seconds'] for r in runs[ours]))} s, anchor "
                          f"{fmt(median(r['seconds'] for r in runs[anchor]))} s", flush=True)
    return results


def _med(runs: list[dict[str, Any]], key: str) -> float:
    return median(float(r[key]) for r in runs)


def report(results: dict[str, Any]) -> PartResult:
    header = ["upstream", "docs", "framework", "ours s", "anchor s", "anchor/ours time",
              "ours docs/s", "anchor docs/s", "ours requests", "anchor requests",
              "ours peak RSS MB", "anchor peak RSS MB", "ours RSS growth MB",
              "anchor RSS growth MB", "max |Δ| between runs"]
    rows = [header]
    headline = []
    for row in results["rows"]:
        ours, anchor = row["ours"], row["anchor"]
        o_s, a_s = _med(ours, "seconds"), _med(anchor, "seconds")

        def requests(runs: list[dict[str, Any]]) -> str:
            seen = sorted({(r["proxy_embeddings"], r["proxy_other"]) for r in runs})
            texts = [f"{e}{f' + {o} /models' if o else ''}" for e, o in seen]
            return " or ".join(texts)  # one value unless a run differed (e.g. a retry)

        def growth(runs: list[dict[str, Any]]) -> float:
            return median((r["peak_rss"] - r["rss_before"]) / 2**20 for r in runs)

        diff = max(r["max_abs_diff"] for r in ours + anchor)
        rows.append([
            row["upstream"], f"{row['docs']:,}", row["framework"], fmt(o_s), fmt(a_s),
            f"{a_s / o_s:.2f}", fmt(row["docs"] / o_s), fmt(row["docs"] / a_s),
            requests(ours), requests(anchor),
            fmt(_med(ours, "peak_rss") / 2**20), fmt(_med(anchor, "peak_rss") / 2**20),
            fmt(growth(ours)), fmt(growth(anchor)), "identical" if diff == 0 else f"{diff:.1e}",
        ])
        ours_all = ours[0]["proxy_embeddings"] + ours[0]["proxy_other"]
        anchor_all = anchor[0]["proxy_embeddings"] + anchor[0]["proxy_other"]
        if o_s > a_s:
            met = "no" if o_s > a_s * 1.05 else "no (within 5 %)"
        elif ours_all < anchor_all:
            met = "yes"
        elif ours[0]["proxy_embeddings"] < anchor[0]["proxy_embeddings"]:
            met = "faster; fewer embedding requests, same total with /models"
        else:
            met = "faster, not fewer requests"
        headline.append([
            f"{row['ours_name']} vs {row['anchor_name']}, {row['docs']:,} docs ({row['upstream']})",
            f"{fmt(o_s)} s, {requests(ours)} req", f"{fmt(a_s)} s, {requests(anchor)} req",
            f"{a_s / o_s:.2f}x", "ours as fast, fewer requests", met,
        ])
    loads = results["loads"]
    md = [
        "Classes, each with its defaults: `PrivatemodeEmbeddings(model=M, base_url=proxy)`; "
        "`OpenAIEmbeddings(model=M, base_url=proxy, api_key='unused', "
        "check_embedding_ctx_length=False)`; `PrivatemodeEmbedding(model_name=M, base_url=proxy)`; "
        "`OpenAIEmbedding(model_name=M, api_base=proxy, api_key='unused')`, M = "
        "all-minilm-l6-v2. llama-index validates `model` against OpenAI's list; `model_name=` "
        "gets past it (`model` keeps its valid default and passes `get_engine`, then "
        "`model_name` replaces the engine names).",
        "",
        "Each run: a fresh process builds the class with its defaults and embeds the documents "
        "once (LangChain `embed_documents`, LlamaIndex `get_text_embedding_batch`); time is that "
        "call; peak RSS is the process's VmHWM (Python, the framework, the texts and the "
        "result); RSS growth is peak minus RSS just before the call. Requests are counted at the "
        "proxy ('+ 1 /models' is our client's one limits lookup per client object). Medians over "
        "the repetitions (ours and the anchor alternate). 'anchor/ours time' > 1 means ours is "
        "faster. 'max |Δ| between runs': the largest difference of any vector component between "
        "any run of either class and the first run (the local engine batches differently for "
        "different request sizes, so float rounding differs in the last bits; the instant "
        "upstream's vectors are exact).",
        f"Repetitions: {', '.join(sorted({str(r['repeats']) for r in results['rows']}))}. "
        f"Load average during the part: {min(loads):.1f}..{max(loads):.1f} (2 cores).",
        "",
        md_table(rows),
    ]
    return PartResult("2. Client classes vs the anchors", "\n".join(md), headline,
                      {"table": text_table(rows)})


def setups_for(quick: bool, local_docs: int | None, instant_docs: list[int] | None,
               repeats: int | None) -> list[tuple[str, list[int], int]]:
    if quick:
        return [("local model", [local_docs or 300], repeats or 1),
                ("instant upstream", instant_docs or [2000, 20000], repeats or 2)]
    return [("local model", [local_docs or 2000], repeats or 3),
            ("instant upstream", instant_docs or [2000, 20000], repeats or 5)]


def run(quick: bool, local_docs: int | None = None, instant_docs: list[int] | None = None,
        repeats: int | None = None) -> PartResult:
    results = measure(setups_for(quick, local_docs, instant_docs, repeats))
    part = report(results)
    print(part.data["table"])
    return part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--local-docs", type=int, default=None,
                        help="documents for the local-model runs (default 2000; quick 300)")
    parser.add_argument("--instant-docs", type=int, nargs="*", default=None,
                        help="document counts for the instant-upstream runs (2000 20000)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    run(args.quick, args.local_docs, args.instant_docs, args.repeats)


if __name__ == "__main__":
    main()
