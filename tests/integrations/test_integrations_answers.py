"""How the client reads answers: its decoder refuses every way an answer can be unusable, and
an error names the failing input from the structured `input_index` field.

A 2xx answer the client cannot turn into exactly one vector per input, in order, must fail the
call with `APIResponseError`; these cases are the branches of that refusal.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from privatemode_integrations import APIResponseError, BadRequestError, InputTooLongError
from privatemode_integrations._client import decode_embeddings, status_error


def _b64(values: list[float]) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def _answer(data: Any) -> bytes:
    return orjson.dumps({"object": "list", "data": data, "model": "m"})


def test_base64_and_float_rows_decode_in_index_order() -> None:
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    b64 = [{"index": i, "embedding": _b64(rows[i])} for i in (2, 0, 1)]
    floats = [{"index": i, "embedding": rows[i]} for i in (1, 2, 0)]
    for data in (b64, floats):
        vectors = decode_embeddings(_answer(data), 3, 2)
        assert vectors.dtype == np.float32
        assert np.array_equal(vectors, np.asarray(rows, dtype=np.float32))


@pytest.mark.parametrize(
    ("content", "count", "dimensions", "fragment"),
    [
        (b"<html>not json</html>", 1, None, "not JSON"),
        (b"[1, 2]", 1, None, "no 'data' list"),
        (orjson.dumps({"object": "list"}), 1, None, "no 'data' list"),
        (_answer({"index": 0}), 1, None, "no 'data' list"),
        (_answer([{"index": 0, "embedding": [1.0]}]), 2, None, "1 vectors for 2 inputs"),
        (_answer([{"embedding": [1.0]}]), 1, None, "no integer 'index'"),
        (_answer([{"index": "0", "embedding": [1.0]}]), 1, None, "no integer 'index'"),
        (_answer([{"index": True, "embedding": [1.0]}]), 1, None, "no integer 'index'"),
        (_answer(["not an object"]), 1, None, "no integer 'index'"),
        (_answer([{"index": 1, "embedding": [1.0]}]), 1, None, "index 1 is out of range"),
        (_answer([{"index": -1, "embedding": [1.0]}]), 1, None, "index -1 is out of range"),
        (
            _answer([{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}]),
            2,
            None,
            "index 0 is out of range or repeated",
        ),
        (_answer([{"index": 0}]), 1, None, "embedding 0 has no 'embedding'"),
        (_answer([{"index": 0, "embedding": "!!!not base64"}]), 1, None, "not valid base64"),
        (_answer([{"index": 0, "embedding": "AA==AA=="}]), 1, None, "not valid base64"),
        (
            _answer([{"index": 0, "embedding": base64.b64encode(b"abcde").decode()}]),
            1,
            None,
            "not float32 arrays",
        ),
        (_answer([{"index": 0, "embedding": ""}]), 1, None, "not float32 arrays"),
        (
            _answer(
                [
                    {"index": 0, "embedding": _b64([1.0, 2.0])},
                    {"index": 1, "embedding": _b64([1.0])},
                ]
            ),
            2,
            None,
            "unequal lengths",
        ),
        (
            _answer([{"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}]),
            2,
            None,
            "unequal or zero lengths",
        ),
        (_answer([{"index": 0, "embedding": []}]), 1, None, "unequal or zero lengths"),
        (_answer([{"index": 0, "embedding": ["x", "y"]}]), 1, None, "non-number"),
        (_answer([{"index": 0, "embedding": [[1.0, 2.0]]}]), 1, None, "not a flat list"),
        (
            _answer([{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": _b64([1.0])}]),
            2,
            None,
            "neither all base64 strings nor all lists",
        ),
        (_answer([{"index": 0, "embedding": 1.5}]), 1, None, "neither all base64"),
        (
            _answer([{"index": 0, "embedding": _b64([1.0, 2.0, 3.0])}]),
            1,
            2,
            "asked for 2 dimensions",
        ),
        (_answer([{"index": 0, "embedding": [1.0, 2.0, 3.0]}]), 1, 4, "the embeddings have 3"),
    ],
)
def test_unusable_answers_are_refused(
    content: bytes, count: int, dimensions: int | None, fragment: str
) -> None:
    with pytest.raises(APIResponseError) as info:
        decode_embeddings(content, count, dimensions)
    assert fragment in str(info.value)


def _error(**fields: Any) -> httpx.Response:
    body = {"message": "an input is refused", "type": "invalid_request_error", "param": "input"}
    return httpx.Response(400, json={"error": {**body, **fields}})


def test_structured_input_index_names_the_callers_input() -> None:
    # The 3rd request of a call (inputs 10..14) failed on its input 2: the caller's input 12.
    error = status_error(
        _error(code="context_length_exceeded", input_index=2), offset=10, count=5, attempts=1
    )
    assert isinstance(error, InputTooLongError)
    assert error.input_index == 12 and error.input_indices == (12,)
    assert "(input 12)" in str(error)


def test_structured_input_index_wins_over_prose() -> None:
    response = _error(message="input 0 looked odd", code="invalid_input", input_index=3)
    error = status_error(response, offset=0, count=5, attempts=1)
    assert type(error) is BadRequestError and error.input_index == 3


@pytest.mark.parametrize("bad", [5, -1, True, "2", None])
def test_an_impossible_input_index_is_ignored(bad: object) -> None:
    error = status_error(_error(input_index=bad), offset=10, count=5, attempts=1)
    assert error.input_index is None
