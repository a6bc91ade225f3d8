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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    BENCH_DIR,
    LARGE_MODEL,
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


@dataclass(frozen=True)
class Setup:
    upstream: str
    """'local model' or 'instant upstream'."""
    model: str
    docs: int
    mode: str
    """'sync' or 'async'."""
    anchor_route: str
    """'direct' (the anchors post to the upstream's plaintext endpoint, no proxy) or 'proxy'."""
    repeats: int


def _run_client(client: str, stack: Any, docs: int, model: str, base_url: str,
                use_async: bool = False,
                reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run in a fresh process; `reference` holds the first run's vectors of this row, to
    compare the others with."""
    stack.reset_counts()
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "vectors.npy"
        argv = [PYTHON, str(BENCH_DIR / "_client_worker.py"), "--client", client,
                "--base-url", base_url, "--model", model, "--docs", str(docs),
                "--save", str(saved)]
        result = run_json(argv + (["--async"] if use_async else []))
        vectors = np.load(saved)
    if reference is not None:
        if "vectors" not in reference:
            reference["vectors"] = vectors
        result["max_abs_diff"] = float(np.max(np.abs(vectors - reference["vectors"])))
    counts = stack.counts()
    if "/direct/" in base_url:
        seen = counts.get("upstream", {})
        result["proxy_embeddings"] = seen.get("/direct/v1/embeddings", 0)
        result["proxy_other"] = sum(n for p, n in seen.items()
                                    if p.startswith("/direct/") and not p.endswith("embeddings"))
    else:
        result["proxy_embeddings"] = counts["proxy"].get("/v1/embeddings", 0)
        result["proxy_other"] = sum(n for p, n in counts["proxy"].items()
                                    if p != "/v1/embeddings" and not p.startswith("/_bench"))
    result["upstream_embeddings"] = counts.get("upstream", {}).get("/v1/embeddings", 0)
    return result


def measure(setups: list[Setup], count_models: list[str] | None = None,
            count_docs: list[int] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {"rows": [], "loads": [], "counts": []}
    for upstream in dict.fromkeys(s.upstream for s in setups):
        stack_cls = LocalModelStack if upstream == "local model" else InstantStack
        with stack_cls() as stack:
            # warm-up: tokenizer, connections, caches
            _run_client("ours-langchain", stack, 64, LOCAL_MODEL, stack.proxy_base_url)
            for setup in (s for s in setups if s.upstream == upstream):
                anchor_url = (stack.direct_base_url if setup.anchor_route == "direct"
                              else stack.proxy_base_url)
                for framework, ours, anchor, ours_name, anchor_name in PAIRS:
                    runs: dict[str, list[dict[str, Any]]] = {ours: [], anchor: []}
                    reference: dict[str, Any] = {}
                    for rep in range(setup.repeats):
                        order = (ours, anchor) if rep % 2 == 0 else (anchor, ours)
                        for client in order:
                            url = stack.proxy_base_url if client == ours else anchor_url
                            runs[client].append(_run_client(
                                client, stack, setup.docs, setup.model, url,
                                setup.mode == "async", reference))
                            results["loads"].append(load_average())
                    row = {"setup": setup, "framework": framework,
                           "ours_name": ours_name, "anchor_name": anchor_name,
                           "ours": runs[ours], "anchor": runs[anchor]}
                    results["rows"].append(row)
                    print(f"  {upstream}, {setup.model}, {setup.docs} docs, {setup.mode}, "
                          f"{framework}: ours {fmt(median(r['seconds'] for r in runs[ours]))} "
                          f"s, anchor ({setup.anchor_route}) "
                          f"{fmt(median(r['seconds'] for r in runs[anchor]))} s", flush=True)
            if upstream == "instant upstream":
                for model in count_models or []:
                    for docs in count_docs or []:
                        entry: dict[str, Any] = {"model": model, "docs": docs}
                        for _fw, ours, anchor, _o, _a in PAIRS:
                            for client in (ours, anchor):
                                url = (stack.proxy_base_url if client == ours
                                       else stack.direct_base_url)
                                r = _run_client(client, stack, docs, model, url)
                                entry[client] = (r["proxy_embeddings"], r["proxy_other"])
                        results["counts"].append(entry)
                        print(f"  requests, {model}, {docs} docs: {entry}", flush=True)
    return results


def _med(runs: list[dict[str, Any]], key: str) -> float:
    return median(float(r[key]) for r in runs)


UNKNOWN_MODEL = "bench-unknown-384"
DIMS = {LOCAL_MODEL: 384, LARGE_MODEL: 2560, UNKNOWN_MODEL: 384}


def _requests(runs: list[dict[str, Any]]) -> str:
    seen = sorted({(r["proxy_embeddings"], r["proxy_other"]) for r in runs})
    texts = [f"{e}{f' + {o} /models' if o else ''}" for e, o in seen]
    return " or ".join(texts)  # one value unless a run differed (e.g. a retry)


def report(results: dict[str, Any]) -> PartResult:
    header = ["upstream", "model (dims)", "docs", "mode", "framework", "anchor route", "ours s",
              "anchor s", "anchor/ours time", "ours docs/s", "anchor docs/s", "ours requests",
              "anchor requests", "ours peak RSS MB", "anchor peak RSS MB", "max |Δ| between runs"]
    rows = [header]
    headline = []
    for row in results["rows"]:
        setup: Setup = row["setup"]
        ours, anchor = row["ours"], row["anchor"]
        o_s, a_s = _med(ours, "seconds"), _med(anchor, "seconds")
        diff = max(r["max_abs_diff"] for r in ours + anchor)
        dims = DIMS.get(setup.model, 0)
        rows.append([
            setup.upstream, f"{setup.model} ({dims})", f"{setup.docs:,}", setup.mode,
            row["framework"], setup.anchor_route, fmt(o_s), fmt(a_s), f"{a_s / o_s:.2f}",
            fmt(setup.docs / o_s), fmt(setup.docs / a_s), _requests(ours), _requests(anchor),
            fmt(_med(ours, "peak_rss") / 2**20), fmt(_med(anchor, "peak_rss") / 2**20),
            "identical" if diff == 0 else f"{diff:.1e}",
        ])
        if setup.upstream == "local model":
            target, goal = "as fast (the model's time)", 0.95
        else:
            goal = 1.2 if dims >= 2560 else 1.5
            target = f">= {goal}x"
        route = "direct" if setup.anchor_route == "direct" else "via the proxy"
        headline.append([
            f"{row['ours_name']} (via proxy) vs {row['anchor_name']} ({route}), "
            f"{setup.docs:,} x {dims}, {setup.mode} ({setup.upstream})",
            f"{fmt(o_s)} s, {_requests(ours)} req", f"{fmt(a_s)} s, {_requests(anchor)} req",
            f"{a_s / o_s:.2f}x", target, "yes" if a_s / o_s >= goal else "no",
        ])
    md = [
        "Classes, each with its defaults: `PrivatemodeEmbeddings(model=M, base_url=proxy)`; "
        "`OpenAIEmbeddings(model=M, base_url=B, api_key='unused', "
        "check_embedding_ctx_length=False)`; `PrivatemodeEmbedding(model_name=M, base_url=proxy)`; "
        "`OpenAIEmbedding(model_name=M, api_base=B, api_key='unused')`. With the instant "
        "upstream the anchors go **direct** (B = the harness's plaintext OpenAI endpoint, no "
        "proxy, no encryption) while ours go through the real proxy to the same harness; with "
        "the local model B is the proxy (the backend speaks only the encrypted protocol). "
        "llama-index validates `model` against OpenAI's list; `model_name=` gets past it.",
        "",
        "Each run: a fresh process builds the class and embeds the documents once (sync: "
        "`embed_documents` / `get_text_embedding_batch`; async: `aembed_documents` / "
        "`aget_text_embedding_batch` under `asyncio.run`); time is that call; peak RSS is the "
        "process's VmHWM. Requests are counted where they arrive (proxy or harness). Medians "
        "over the repetitions (ours and the anchor alternate). 'anchor/ours time' > 1 means "
        "ours is faster.",
        f"Repetitions: {', '.join(sorted({str(r['setup'].repeats) for r in results['rows']}))}. "
        f"Load average during the part: {min(results['loads']):.1f}.."
        f"{max(results['loads']):.1f} (2 cores).",
        "",
        md_table(rows),
    ]
    counts = results.get("counts") or []
    if counts:
        crow = [["model", "docs", "PrivatemodeEmbeddings", "OpenAIEmbeddings",
                 "PrivatemodeEmbedding", "OpenAIEmbedding"]]
        for entry in counts:
            kind = "unknown to our catalogue" if entry["model"] == UNKNOWN_MODEL else "catalogued"
            crow.append([f"{entry['model']} ({kind})", f"{entry['docs']:,}"] + [
                f"{entry[c][0]}{f' + {entry[c][1]} /models' if entry[c][1] else ''}"
                for c in ("ours-langchain", "openai-langchain", "ours-llamaindex",
                          "openai-llamaindex")])
        md += ["", "#### Embedding requests per call, catalogued and unknown model", "",
               "One run per cell (sync), ours through the proxy, anchors direct; requests "
               "counted where they arrive.", "", md_table(crow)]
        for model in dict.fromkeys(e["model"] for e in counts):
            mine = [e for e in counts if e["model"] == model]
            ours_txt = " / ".join(f"{e['ours-langchain'][0]}" for e in mine)
            li_txt = " / ".join(f"{e['ours-llamaindex'][0]}" for e in mine)
            lc_a = " / ".join(f"{e['openai-langchain'][0]}" for e in mine)
            li_a = " / ".join(f"{e['openai-llamaindex'][0]}" for e in mine)
            worse = any(e["ours-langchain"][0] > e["openai-langchain"][0]
                        or e["ours-llamaindex"][0] > e["openai-llamaindex"][0] for e in mine)
            sizes = " / ".join(f"{e['docs']:,}" for e in mine)
            headline.append([
                f"Embedding requests for {sizes} docs, {model}", f"LC {ours_txt}, LI {li_txt}",
                f"LC {lc_a}, LI {li_a}", "-",
                "<= the anchors'", "no" if worse else "yes"])
    return PartResult("2. Client classes vs the anchors", "\n".join(md), headline,
                      {"table": text_table(rows)})


def setups_for(quick: bool, repeats: int | None = None) -> list[Setup]:
    if quick:
        r = repeats or 1
        return [Setup("local model", LOCAL_MODEL, 200, "sync", "proxy", r),
                *(Setup("instant upstream", m, d, mode, "direct", r)
                  for m, d in ((LOCAL_MODEL, 4000), (LARGE_MODEL, 1000))
                  for mode in ("sync", "async"))]
    r = repeats or 3
    return [Setup("local model", LOCAL_MODEL, 2000, "sync", "proxy", repeats or 2),
            *(Setup("instant upstream", m, d, mode, "direct", r)
              for m, d in ((LOCAL_MODEL, 20000), (LARGE_MODEL, 5000))
              for mode in ("sync", "async"))]


def run(quick: bool, repeats: int | None = None, counts: bool = True) -> PartResult:
    results = measure(setups_for(quick, repeats),
                      [LOCAL_MODEL, UNKNOWN_MODEL] if counts else None,
                      [2000, 20000] if counts else None)
    part = report(results)
    print(part.data["table"])
    return part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-counts", action="store_true",
                        help="skip the request counts for a catalogued and an unknown model")
    args = parser.parse_args()
    run(args.quick, args.repeats, not args.no_counts)


if __name__ == "__main__":
    main()
