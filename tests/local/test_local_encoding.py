"""The embeddings response body: OpenAI shape, `float` and `base64` (little-endian float32)."""

from __future__ import annotations

import base64

import numpy as np
import orjson
from privatemode_proxy._catalogue import ALL_MINILM_L6_V2, QWEN3_EMBEDDING_4B
from privatemode_proxy.local._encoding import embeddings_response_body, reduce_dimensions


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_float_body_shape_and_exact_values() -> None:
    vectors = unit_vectors(3, 384)
    body = orjson.loads(
        embeddings_response_body(
            vectors, model_id="m", encoding_format="float", prompt_tokens=17, response_id="embd-1"
        )
    )
    assert body["object"] == "list" and body["model"] == "m" and body["id"] == "embd-1"
    assert body["usage"] == {"prompt_tokens": 17, "total_tokens": 17}
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert {d["object"] for d in body["data"]} == {"embedding"}
    decoded = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert np.array_equal(decoded, vectors)  # float32 text round-trips exactly


def test_base64_is_little_endian_float32() -> None:
    vectors = unit_vectors(2, 384, seed=1)
    body = orjson.loads(
        embeddings_response_body(
            vectors, model_id="m", encoding_format="base64", prompt_tokens=4, response_id="x"
        )
    )
    for row, item in zip(vectors, body["data"], strict=True):
        raw = base64.b64decode(item["embedding"])
        assert len(raw) == 384 * 4
        assert np.array_equal(np.frombuffer(raw, dtype="<f4"), row)
    # Independent of numpy: the first float's bytes, by struct.
    import struct

    first = struct.unpack("<f", base64.b64decode(body["data"][0]["embedding"])[:4])[0]
    assert first == float(vectors[0, 0])


def test_native_dimensions_pass_through() -> None:
    vectors = unit_vectors(2, 384)
    assert reduce_dimensions(vectors, None, ALL_MINILM_L6_V2) is vectors
    assert reduce_dimensions(vectors, 384, ALL_MINILM_L6_V2) is vectors


def test_matryoshka_reduction_slices_and_renormalises() -> None:
    vectors = unit_vectors(4, 2560)
    reduced = reduce_dimensions(vectors, 64, QWEN3_EMBEDDING_4B)
    assert reduced.shape == (4, 64) and reduced.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, rtol=1e-6)
    cos = np.sum(reduced * vectors[:, :64], axis=1) / np.linalg.norm(vectors[:, :64], axis=1)
    np.testing.assert_allclose(cos, 1.0, rtol=1e-6)
