"""`query_instruction`: queries (never documents) of qwen3 models carry `Instruct: ...\nQuery:`.

What the classes send is read at the scripted test server (a stand-in that records request
bodies; the real proxy would encrypt them). The local stack shows that MiniLM gets none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from privatemode_proxy import LocalStack
from scripted_server import ScriptedOpenAIServer

from privatemode_integrations import PrivatemodeEmbedding, PrivatemodeEmbeddings
from privatemode_integrations._instructions import (
    DEFAULT_QUERY_INSTRUCTION,
    instructed_query,
    uses_query_instruction,
)

QWEN = "qwen3-embedding-4b"
DEFAULT_PREFIX = f"Instruct: {DEFAULT_QUERY_INSTRUCTION}\nQuery:"


@pytest.fixture()
def qwen_server(scripted: ScriptedOpenAIServer) -> Iterator[ScriptedOpenAIServer]:
    """The scripted stand-in answering as the service's qwen3 model."""
    scripted.model = QWEN
    yield scripted
    scripted.model = "scripted-model"


def _sent(server: ScriptedOpenAIServer) -> list[list[str]]:
    return [
        list(s.body["input"]) if isinstance(s.body["input"], list) else [s.body["input"]]
        for s in server.embedding_requests()
        if s.body is not None
    ]


def test_format() -> None:
    assert instructed_query("what is HPKE?", QWEN, "Find protocol docs") == (
        "Instruct: Find protocol docs\nQuery:what is HPKE?"
    )
    assert instructed_query("q", QWEN, None) == "q"
    assert instructed_query("q", QWEN, "") == "q"
    assert instructed_query("q", "all-minilm-l6-v2", "Find") == "q"
    assert uses_query_instruction("Qwen3-Embedding-8B") and not uses_query_instruction("e5")


def test_langchain_instructs_queries_only(qwen_server: ScriptedOpenAIServer) -> None:
    emb = PrivatemodeEmbeddings(base_url=qwen_server.base_url, model=QWEN)
    assert emb.query_instruction == DEFAULT_QUERY_INSTRUCTION
    emb.embed_documents(["a document"])
    emb.embed_query("a question")
    asyncio.run(emb.aembed_documents(["another document"]))
    asyncio.run(emb.aembed_query("another question"))
    assert _sent(qwen_server) == [
        ["a document"],
        [DEFAULT_PREFIX + "a question"],
        ["another document"],
        [DEFAULT_PREFIX + "another question"],
    ]


def test_langchain_custom_and_no_instruction(qwen_server: ScriptedOpenAIServer) -> None:
    custom = PrivatemodeEmbeddings(
        base_url=qwen_server.base_url, model=QWEN, query_instruction="Find the matching clause"
    )
    custom.embed_query("notice period")
    off = PrivatemodeEmbeddings(base_url=qwen_server.base_url, model=QWEN, query_instruction=None)
    off.embed_query("notice period")
    assert _sent(qwen_server) == [
        ["Instruct: Find the matching clause\nQuery:notice period"],
        ["notice period"],
    ]


def test_llamaindex_instructs_queries_only(qwen_server: ScriptedOpenAIServer) -> None:
    emb = PrivatemodeEmbedding(base_url=qwen_server.base_url, model_name=QWEN)
    emb.get_text_embedding("a node")
    emb.get_text_embedding_batch(["node 1", "node 2"])
    emb.get_query_embedding("a question")
    asyncio.run(emb.aget_query_embedding("another question"))
    asyncio.run(emb.aget_text_embedding("another node"))
    sent = _sent(qwen_server)
    assert sent == [
        ["a node"],
        ["node 1", "node 2"],
        [DEFAULT_PREFIX + "a question"],
        [DEFAULT_PREFIX + "another question"],
        ["another node"],
    ]
    PrivatemodeEmbedding(
        base_url=qwen_server.base_url, model_name=QWEN, query_instruction=None
    ).get_query_embedding("plain")
    assert _sent(qwen_server)[-1] == ["plain"]


def test_local_minilm_gets_no_instruction(local_stack: LocalStack) -> None:
    """A model without instructions: the query is embedded as it is, so a query and a document
    of the same text get the same vector."""
    lc = PrivatemodeEmbeddings(base_url=local_stack.base_url, model="all-minilm-l6-v2")
    assert lc.query_instruction is not None  # the default is set, and not applied
    text = "Where is the notice period defined?"
    np.testing.assert_allclose(lc.embed_query(text), lc.embed_documents([text])[0], atol=1e-6)
    li = PrivatemodeEmbedding(base_url=local_stack.base_url, model_name="all-minilm-l6-v2")
    np.testing.assert_allclose(li.get_query_embedding(text), li.get_text_embedding(text), atol=1e-6)
