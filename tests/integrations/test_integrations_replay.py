"""Replay the committed cassettes with no server: the classes' requests must match byte for byte.

The cassettes were recorded from the real local stack (record_cassettes.py), so the vectors in
them are the real model's: retrieval on them still has to pick the right document.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from cassette_scenarios import (
    CASSETTE_API_KEY,
    CASSETTES,
    LOCAL_MODEL,
    REPLAY_BASE_URL,
    SCENARIOS,
    make_vcr,
)
from corpus import DOCUMENTS, QUERIES

from privatemode_integrations import InputTooLongError


def replay(name: str) -> tuple[dict[str, Any], Any]:
    path = CASSETTES / f"{name}.yaml"
    assert path.is_file(), f"{path} missing: run python tests/integrations/record_cassettes.py"
    with make_vcr("none").use_cassette(path.name, allow_playback_repeats=False) as cassette:
        result = SCENARIOS[name](REPLAY_BASE_URL)
    assert cassette.all_played, f"{name}: not every recorded request was sent again"
    return result, cassette


def nearest(query: list[float], documents: list[list[float]]) -> int:
    docs = np.asarray(documents)
    return int(np.argmax(docs @ np.asarray(query)))


@pytest.mark.usefixtures("socket_disabled")
def test_langchain_replay() -> None:
    result, cassette = replay("langchain_documents_and_query")
    assert len(result["documents"]) == len(DOCUMENTS)
    assert all(len(v) == 384 for v in result["documents"])
    assert nearest(result["query"], result["documents"]) == QUERIES[next(iter(QUERIES))]
    # ceil(5 / 2) document requests and one query request.
    paths = [r.path for r in cassette.requests]
    # A catalogued model needs no /v1/models lookup: every request is an embeddings request.
    assert paths.count("/v1/models") == 0 and paths.count("/v1/embeddings") == 4


@pytest.mark.usefixtures("socket_disabled")
def test_llamaindex_replay() -> None:
    result, cassette = replay("llamaindex_batch_and_query")
    assert nearest(result["query"], result["documents"]) == QUERIES[next(iter(QUERIES))]
    bodies = [json.loads(r.body) for r in cassette.requests if r.path == "/v1/embeddings"]
    assert [len(b["input"]) for b in bodies] == [5, 1]  # one request for the batch, not five


def test_async_replay() -> None:
    result, cassette = replay("langchain_async_documents")
    assert np.asarray(result["documents"]).shape == (5, 384)
    bodies = [json.loads(r.body) for r in cassette.requests if r.path == "/v1/embeddings"]
    assert sorted(len(b["input"]) for b in bodies) == [2, 3]


@pytest.mark.usefixtures("socket_disabled")
def test_over_long_replay() -> None:
    result, _ = replay("over_long_input")
    error = result["error"]
    assert isinstance(error, InputTooLongError)
    assert error.input_index == 1 and error.status_code == 400 and error.attempts == 1


def test_request_shape_is_pinned() -> None:
    requests = []
    for name in SCENARIOS:
        with make_vcr("none").use_cassette(f"{name}.yaml") as cassette:
            requests.extend(cassette.requests)
    embeddings = [r for r in requests if r.path == "/v1/embeddings"]
    assert embeddings
    for request in embeddings:
        assert request.method == "POST" and request.uri.startswith(REPLAY_BASE_URL)
        body = json.loads(request.body)
        # Strings, not token arrays; base64 vectors; nothing else the proxy would not expect.
        assert set(body) == {"model", "input", "encoding_format"}
        assert body["model"] == LOCAL_MODEL and body["encoding_format"] == "base64"
        assert all(isinstance(t, str) for t in body["input"])
        assert request.headers.get("Content-Type") == "application/json"


def test_cassettes_hold_no_api_key() -> None:
    for path in CASSETTES.glob("*.yaml"):
        text = path.read_text()
        assert CASSETTE_API_KEY not in text, path
        assert "Bearer" not in text, path
