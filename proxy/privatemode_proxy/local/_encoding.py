"""The OpenAI embeddings response body: dimensions, `float` or `base64` encoding, JSON bytes."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from .._catalogue import ModelInfo
from ._validation import EncodingFormat


def reduce_dimensions(
    vectors: npt.NDArray[np.float32], dimensions: int | None, model: ModelInfo
) -> npt.NDArray[np.float32]:
    """Apply a validated `dimensions` to L2-normalised vectors of the model's native size.

    Matryoshka models take the leading slice and re-normalise it; for any other model only the
    native size is valid (the validation refused the rest).
    """
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    if not model.matryoshka or dimensions > vectors.shape[1]:
        raise ValueError(f"model '{model.id}' cannot reduce to {dimensions} dimensions")
    sliced = vectors[:, :dimensions]
    norms = np.linalg.norm(sliced, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    reduced: npt.NDArray[np.float32] = (sliced / norms).astype(np.float32, copy=False)
    return reduced


def encode_vector(vector: npt.NDArray[np.float32], encoding_format: EncodingFormat) -> Any:
    """One embedding as OpenAI sends it: a float array, or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4", copy=False).tobytes()).decode("ascii")
    # orjson writes float32 with the shortest text that reads back to the same float32.
    return vector.astype(np.float32, copy=False)


def embeddings_response_body(
    vectors: npt.NDArray[np.float32],
    *,
    model_id: str,
    encoding_format: EncodingFormat,
    prompt_tokens: int,
    response_id: str,
) -> bytes:
    """The JSON bytes of an OpenAI `CreateEmbeddingResponse`, plus the plaintext `id`."""
    body = {
        "id": response_id,
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(v, encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": model_id,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
