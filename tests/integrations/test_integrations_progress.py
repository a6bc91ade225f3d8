"""Progress while embedding (issue 14, item 4), on the real local stack.

A request may carry 2,048 texts, so a bar that moves per request would sit still for most of a
call. While a bar is shown the client sends about 50 smaller requests instead; the bar then
advances with each and tqdm shows a rate and an ETA. Requests are counted with an httpx hook.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from llama_index.core import Document
from llama_index.core.ingestion import IngestionPipeline

from privatemode_integrations import EmbeddingsClient, PrivatemodeEmbedding, PrivatemodeEmbeddings

LOCAL_MODEL = "all-minilm-l6-v2"
TEXTS = [f"a short note about item {i} and what it is for" for i in range(1000)]


def _counting_client() -> tuple[httpx.Client, list[int]]:
    sizes: list[int] = []

    def count(request: httpx.Request) -> None:
        if request.url.path.endswith("/embeddings"):
            sizes.append(len(json.loads(request.content)["input"]))

    return httpx.Client(event_hooks={"request": [count]}), sizes


def test_a_shown_bar_gets_about_fifty_steps(
    local_stack: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    http, sizes = _counting_client()
    with EmbeddingsClient(base_url=local_stack.base_url, model=LOCAL_MODEL, http_client=http) as c:
        quiet = c.embed(TEXTS)
        assert len(sizes) == 1  # no bar: as few requests as the limits allow
        sizes.clear()
        shown = c.embed(TEXTS, show_progress=True)
    assert (shown == quiet).all()  # same vectors, in the same order
    assert 40 <= len(sizes) <= 60 and max(sizes) <= 20
    err = capsys.readouterr().err
    assert "Embedding:" in err and "/1000" in err
    assert re.search(r"\[\d\d:\d\d<", err)  # elapsed<remaining: tqdm's ETA
    http.close()


def test_small_calls_are_not_cut_finer_than_sixteen_texts(local_stack: Any) -> None:
    http, sizes = _counting_client()
    embeddings = PrivatemodeEmbeddings(
        base_url=local_stack.base_url, model=LOCAL_MODEL, http_client=http, show_progress_bar=True
    )
    embeddings.embed_documents(TEXTS[:100])
    assert sizes == [16] * 6 + [4]
    http.close()


def test_ingestion_pipeline_shows_embedding_progress(
    local_stack: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    embed = PrivatemodeEmbedding(
        base_url=local_stack.base_url, model_name=LOCAL_MODEL, show_progress_bar=True
    )
    pipeline = IngestionPipeline(transformations=[embed], disable_cache=True)
    nodes = pipeline.run(documents=[Document(text=t) for t in TEXTS[:300]])
    assert len(nodes) == 300 and all(len(n.embedding or []) == 384 for n in nodes)
    err = capsys.readouterr().err
    assert "Embedding:" in err and "/300" in err
