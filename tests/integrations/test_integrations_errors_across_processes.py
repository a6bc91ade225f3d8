"""Errors that cross process boundaries: pickling, and LlamaIndex's multi-process ingestion.

A process pool sends a worker's exception to the parent pickled; one that cannot be rebuilt
there kills the pool's result thread and the parent waits forever (issue 14, item 2).
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.ingestion import IngestionPipeline

import privatemode_integrations
from privatemode_integrations import (
    APIStatusError,
    InputTooLongError,
    PrivatemodeEmbedding,
    PrivatemodeError,
)

PUBLIC_ERRORS = sorted(
    (
        value
        for name in privatemode_integrations.__all__
        if isinstance(value := getattr(privatemode_integrations, name), type)
        and issubclass(value, BaseException)
    ),
    key=lambda cls: cls.__name__,
)


def _example(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, APIStatusError):
        return cls(
            "Privatemode endpoint answered 400 (input 7): input 7 has 300 tokens",
            status_code=429 if cls.__name__ == "RateLimitError" else 400,
            error_type="invalid_request_error",
            param="input",
            code="context_length_exceeded",
            input_index=7,
            attempts=3,
            body={"error": {"message": "input 7 has 300 tokens"}},
        )
    if cls.__name__ in ("APIConnectionError", "APITimeoutError"):
        return cls("could not connect to http://127.0.0.1:9/v1", attempts=3)  # type: ignore[call-arg]
    return cls("the embeddings response has no 'data' list")


def test_every_public_exception_is_listed() -> None:
    names = {cls.__name__ for cls in PUBLIC_ERRORS}
    assert {"PrivatemodeError", "APIStatusError", "InputTooLongError", "RateLimitError"} <= names
    assert all(issubclass(cls, PrivatemodeError) for cls in PUBLIC_ERRORS)
    assert len(PUBLIC_ERRORS) >= 12


@pytest.mark.parametrize("cls", PUBLIC_ERRORS, ids=lambda cls: cls.__name__)
def test_public_exception_survives_pickle(cls: type[BaseException]) -> None:
    error = _example(cls)
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is cls
    assert str(restored) == str(error)
    assert restored.args == error.args
    assert vars(restored) == vars(error)
    # Where users import it from, not the private module that defines it.
    assert cls.__module__ == "privatemode_integrations"


def test_multi_process_ingestion_raises_in_the_parent(local_stack: Any) -> None:
    """`IngestionPipeline(num_workers=2)` with an over-long input raises, instead of hanging.

    The pipeline runs in a thread so that a hang shows up as a failed join, not a stuck suite.
    """
    import threading

    embed = PrivatemodeEmbedding(base_url=local_stack.base_url, model_name="all-minilm-l6-v2")
    documents = [Document(text=f"short document number {i}") for i in range(6)]
    documents.append(Document(text="far too long for the local model " * 200))
    pipeline = IngestionPipeline(transformations=[embed], disable_cache=True)
    outcome: dict[str, BaseException | object] = {}

    def run() -> None:
        try:
            outcome["result"] = pipeline.run(documents=documents, num_workers=2)
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)  # two spawned interpreters importing LlamaIndex, then one request
    assert not worker.is_alive(), "the parent hung waiting for a worker's error"
    error = outcome.get("error")
    assert isinstance(error, InputTooLongError), outcome
    assert error.input_index is not None
    assert "all-minilm-l6-v2" in str(error) or "256" in str(error)
