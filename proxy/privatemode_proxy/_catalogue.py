"""The embedding models the proxy knows, with the limits it splits and validates by.

The proxy reads this before anything is sent upstream: a request that cannot succeed is refused
locally with a clear 400, and one that is too large for a single upstream call is split.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """What the proxy needs to know about one embedding model."""

    id: str
    native_dimensions: int
    max_tokens_per_input: int
    max_inputs_per_request: int
    max_tokens_per_request: int
    min_dimensions: int | None = None
    """Smallest reduced `dimensions` accepted; None when the model has no reduced dimensions."""
    matryoshka: bool = False
    """Whether a reduced dimension is the leading slice of the full vector, re-normalised."""
    served_dimensions: tuple[int, ...] | None = None
    """The `dimensions` values the upstream accepts besides the native size (vLLM's
    `matryoshka_dimensions`); None: every offered size. Offered to clients: `min_dimensions` up to
    `native_dimensions`. A size in between is asked upstream at the next larger served size
    and truncated and re-normalised by the proxy (`upstream_dimensions`)."""
    tokenizer_shipped: bool = False
    """True when token counts are exact (our tokenizer); else they are conservative estimates."""
    tasks: tuple[str, ...] = ("embed",)
    owned_by: str = "privatemode"

    @property
    def supports_dimensions(self) -> bool:
        return self.min_dimensions is not None

    def check_dimensions(self, dimensions: int) -> str | None:
        """Return why `dimensions` is not acceptable for this model, or None if it is."""
        if not self.supports_dimensions:
            if dimensions == self.native_dimensions:
                return None
            return (
                f"model '{self.id}' does not support reduced dimensions; omit 'dimensions' "
                f"or pass {self.native_dimensions}"
            )
        assert self.min_dimensions is not None
        if not self.min_dimensions <= dimensions <= self.native_dimensions:
            return (
                f"'dimensions' must be between {self.min_dimensions} and "
                f"{self.native_dimensions} for model '{self.id}', got {dimensions}"
            )
        return None

    def upstream_dimensions(self, dimensions: int | None) -> int | None:
        """What to ask upstream for a client's valid `dimensions`: the smallest served size at or
        above it, or None to leave `dimensions` out (the native size)."""
        if dimensions is None or dimensions >= self.native_dimensions:
            return None
        if self.served_dimensions is None:
            return dimensions
        size = min((d for d in self.served_dimensions if d >= dimensions), default=None)
        return None if size is None or size >= self.native_dimensions else size


QWEN3_EMBEDDING_4B = ModelInfo(
    id="qwen3-embedding-4b",
    native_dimensions=2560,
    min_dimensions=32,
    matryoshka=True,
    served_dimensions=(1024, 2560),  # the service's vLLM: any other `dimensions` is a 400
    max_tokens_per_input=32_000,
    max_inputs_per_request=2048,
    max_tokens_per_request=300_000,
)

ALL_MINILM_L6_V2 = ModelInfo(
    id="all-minilm-l6-v2",
    native_dimensions=384,
    max_tokens_per_input=256,
    max_inputs_per_request=2048,
    max_tokens_per_request=300_000,
    tokenizer_shipped=True,
    owned_by="privatemode-local",
)

CATALOGUE: dict[str, ModelInfo] = {
    m.id: m for m in (QWEN3_EMBEDDING_4B, ALL_MINILM_L6_V2)
}
LOCAL_MODEL_ID = ALL_MINILM_L6_V2.id
DEFAULT_REMOTE_MODEL_ID = QWEN3_EMBEDDING_4B.id


def estimate_tokens(text: str) -> int:
    """An upper bound on the token count of `text` for tokenizers we don't ship.

    Byte-level BPE tokenizers (Qwen3) never produce more tokens than UTF-8 bytes, plus a few
    special tokens, so the byte length is a bound that never under-counts.
    """
    return len(text.encode("utf-8")) + 2
