"""One embedding client, timed in a fresh process (parts 2 and 5): wall time and peak RSS.

    python bench/_client_worker.py --client ours-langchain --base-url URL --docs 2000

Clients, each with its defaults except where the comparison needs a setting:
- ours-langchain   PrivatemodeEmbeddings(model=..., base_url=...).embed_documents(texts)
- openai-langchain langchain-openai OpenAIEmbeddings(model=..., base_url=..., api_key=...,
                   check_embedding_ctx_length=False).embed_documents(texts)
- ours-llamaindex  PrivatemodeEmbedding(model_name=..., base_url=...)
                   .get_text_embedding_batch(texts)
- openai-llamaindex llama-index OpenAIEmbedding(model_name=..., api_base=..., api_key=...)
                   .get_text_embedding_batch(texts). `model_name=` (not `model=`) is what lets
                   a model outside OpenAI's list through: `model` keeps its valid default and
                   passes `get_engine`'s check, then `model_name` replaces the engine names.

Prints one JSON line: seconds for the embedding call, peak RSS (VmHWM) and the RSS before
the call, the shape, and a digest of the vectors (the same texts give the same digest with
every client when all of them return the same vectors).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import make_texts

CLIENTS = ("ours-langchain", "openai-langchain", "ours-llamaindex", "openai-llamaindex")


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM of /proc/self/status.

    Not `ru_maxrss`: Linux carries the parent's high-water mark into a child across fork/exec
    (subprocess spawns with vfork), so a small child of a big parent would report the parent's.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_now() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return 0


def build(client: str, base_url: str, model: str) -> Any:
    if client == "ours-langchain":
        from privatemode_integrations import PrivatemodeEmbeddings

        return PrivatemodeEmbeddings(model=model, base_url=base_url)
    if client == "openai-langchain":
        from langchain_openai import OpenAIEmbeddings

        return OpenAIEmbeddings(model=model, base_url=base_url, api_key="unused-by-the-proxy",
                                check_embedding_ctx_length=False)
    if client == "ours-llamaindex":
        from privatemode_integrations import PrivatemodeEmbedding

        return PrivatemodeEmbedding(model_name=model, base_url=base_url)
    if client == "openai-llamaindex":
        from llama_index.embeddings.openai import OpenAIEmbedding

        return OpenAIEmbedding(model_name=model, api_base=base_url,
                               api_key="unused-by-the-proxy")
    raise ValueError(client)


def embed(client: str, obj: Any, texts: list[str], use_async: bool = False) -> list[list[float]]:
    if use_async:
        import asyncio

        if client.endswith("langchain"):
            return asyncio.run(obj.aembed_documents(texts))  # type: ignore[no-any-return]
        return asyncio.run(obj.aget_text_embedding_batch(texts))  # type: ignore[no-any-return]
    if client.endswith("langchain"):
        result: list[list[float]] = obj.embed_documents(texts)
        return result
    batch: list[list[float]] = obj.get_text_embedding_batch(texts)
    return batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", choices=CLIENTS, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--docs", type=int, required=True)
    parser.add_argument("--words", type=int, default=12)
    parser.add_argument("--save", default=None, help="write the vectors here (.npy)")
    parser.add_argument("--async", dest="use_async", action="store_true",
                        help="the async twin (aembed_documents / aget_text_embedding_batch)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also report the Python-level peak (tracemalloc; slower)")
    args = parser.parse_args()

    t_import = time.perf_counter()
    obj = build(args.client, args.base_url, args.model)
    import_s = time.perf_counter() - t_import
    texts = make_texts(args.docs, args.words, seed=5)
    gc.collect()
    rss_before = _rss_now()
    maxrss_before = peak_rss()
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start()
    t0 = time.perf_counter()
    vectors = embed(args.client, obj, texts, args.use_async)
    seconds = time.perf_counter() - t0
    traced_peak = 0
    if args.tracemalloc:
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    peak = peak_rss()
    rss_after = _rss_now()
    import numpy as np

    # Where the memory is: the texts, and the result as the framework returns it (a list of
    # lists of Python floats: 24 B per float object + 8 B per list slot).
    texts_bytes = sys.getsizeof(texts) + sum(sys.getsizeof(t) for t in texts)
    if vectors and isinstance(vectors[0], list):
        dims = len(vectors[0])
        result_bytes = (sys.getsizeof(vectors) + sum(sys.getsizeof(v) for v in vectors)
                        + len(vectors) * dims * sys.getsizeof(0.5))
    else:
        result_bytes = 0
    matrix = np.asarray(vectors, dtype=np.float32)
    digest = hashlib.sha256(np.round(matrix, 5).tobytes()).hexdigest()[:16]
    if args.save:
        np.save(args.save, matrix)
    print(json.dumps({
        "client": args.client, "docs": args.docs, "seconds": seconds,
        "import_and_build_s": import_s,
        "rss_before": rss_before, "maxrss_before": maxrss_before, "peak_rss": peak,
        "rss_after": rss_after, "shape": list(matrix.shape), "digest": digest,
        "texts_bytes": texts_bytes, "result_bytes": result_bytes, "traced_peak": traced_peak,
    }))


if __name__ == "__main__":
    main()
