"""The OpenAI embeddings response body of the local backend: dimensions, encoding, JSON bytes.

The vector layouts themselves (`float` rows, `base64` little-endian float32, Matryoshka slicing)
live in `privatemode_proxy.openai`, shared with the proxy; this module only applies the
model's rules and builds the body.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import orjson

from .._catalogue import ModelInfo
from ..openai import EncodingFormat, encode_embeddings
from ..openai import reduce_dimensions as matryoshka_reduce


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
    return matryoshka_reduce(vectors, dimensions)


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
        "created": int(time.time()),  # as the service's vLLM answers
        "data": encode_embeddings(vectors, encoding_format),
        "model": model_id,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
