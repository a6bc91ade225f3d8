"""The calls whose HTTP traffic is pinned in cassettes/, shared by recording and replay.

Recorded from the real local stack by `python tests/integrations/record_cassettes.py`; replayed
by test_integrations_replay.py with no server and record mode `none`, matching each request on
method, URL and exact body, so any change in what the classes send fails the replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import vcr
from corpus import DOCUMENTS, QUERIES

from privatemode_integrations import (
    EmbeddingsClient,
    InputTooLongError,
    ModelLimits,
    PrivatemodeEmbedding,
    PrivatemodeEmbeddings,
)

CASSETTES = Path(__file__).resolve().parent / "cassettes"
REPLAY_BASE_URL = "http://localhost:8080/v1"
"""Recorded URLs are rewritten to the classes' default proxy URL."""
LOCAL_MODEL = "all-minilm-l6-v2"
CASSETTE_API_KEY = "pm-cassette-key-must-not-be-recorded"
FIRST_QUERY = next(iter(QUERIES))

_DROPPED_RESPONSE_HEADERS = {"date", "server"}


def make_vcr(record_mode: str, recorded_base_url: str | None = None) -> vcr.VCR:
    def rewrite(request: Any) -> Any:
        # vcrpy may apply this twice to one request: it must be idempotent.
        if recorded_base_url is not None and not request.uri.startswith(REPLAY_BASE_URL):
            if not request.uri.startswith(recorded_base_url):
                # The in-process proxy's own traffic to the backend: not the classes' requests.
                return None
            request.uri = REPLAY_BASE_URL + request.uri[len(recorded_base_url) :]
        return request

    def scrub(response: dict[str, Any]) -> dict[str, Any]:
        response["headers"] = {
            k: v
            for k, v in response["headers"].items()
            if k.lower() not in _DROPPED_RESPONSE_HEADERS
        }
        return response

    return vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode=record_mode,
        match_on=["method", "scheme", "host", "port", "path", "query", "body"],
        filter_headers=["authorization", "host"],
        before_record_request=rewrite,
        before_record_response=scrub,
        decode_compressed_response=True,
    )


def langchain_documents_and_query(base_url: str) -> dict[str, Any]:
    embed = PrivatemodeEmbeddings(
        base_url=base_url, model=LOCAL_MODEL, api_key=CASSETTE_API_KEY, batch_size=2
    )
    return {
        "documents": embed.embed_documents(DOCUMENTS),
        "query": embed.embed_query(FIRST_QUERY),
    }


def langchain_async_documents(base_url: str) -> dict[str, Any]:
    embed = PrivatemodeEmbeddings(
        base_url=base_url, model=LOCAL_MODEL, batch_size=3, max_concurrency=1
    )
    return {"documents": asyncio.run(embed.aembed_documents(DOCUMENTS))}


def llamaindex_batch_and_query(base_url: str) -> dict[str, Any]:
    embed = PrivatemodeEmbedding(base_url=base_url, model_name=LOCAL_MODEL)
    return {
        "documents": embed.get_text_embedding_batch(DOCUMENTS),
        "query": embed.get_query_embedding(FIRST_QUERY),
    }


def over_long_input(base_url: str) -> dict[str, Any]:
    # The client refuses what it can count before sending (test_integrations_long_inputs.py);
    # told a larger per-input limit than the server's, it sends, and the server's 400 is parsed.
    limits = ModelLimits(
        max_inputs_per_request=2048,
        max_tokens_per_request=300_000,
        max_tokens_per_input=100_000,
        source="server",
    )
    client = EmbeddingsClient(base_url=base_url, model=LOCAL_MODEL, max_retries=0, limits=limits)
    try:
        client.embed(["a short text", "confidential " * 400])
    except InputTooLongError as exc:
        return {"error": exc}
    finally:
        client.close()
    raise AssertionError("the over-long input was accepted")


SCENARIOS: dict[str, Callable[[str], dict[str, Any]]] = {
    "langchain_documents_and_query": langchain_documents_and_query,
    "langchain_async_documents": langchain_async_documents,
    "llamaindex_batch_and_query": llamaindex_batch_and_query,
    "over_long_input": over_long_input,
}
