"""The OpenAI embeddings wire format, written once for the proxy, the local backend and the client.

- `_vectors`: embedding vectors between JSON and numpy (`float` rows, `base64` little-endian
  float32), decoding with every check a caller relies on, Matryoshka reduction.

Light on purpose (numpy and orjson only): the client imports it without loading any server.
"""

from __future__ import annotations

from privatemode_proxy.openai._vectors import (
    ENCODING_FORMATS,
    FloatMatrix,
    VectorFormatError,
    decode_embeddings,
    encode_embeddings,
    reduce_dimensions,
)

__all__ = [
    "ENCODING_FORMATS",
    "FloatMatrix",
    "VectorFormatError",
    "decode_embeddings",
    "encode_embeddings",
    "reduce_dimensions",
]
