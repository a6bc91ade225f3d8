"""Token estimates for models whose tokenizer we don't ship (qwen3-embedding-4b).

The proxy needs a token count before it sends a request: to split a request so that it fits one
rate-limit window, and to debit the key's token budget until the service reports the real count.
The only hard bound for a byte-level BPE is the UTF-8 byte length (+ special tokens), about four
times the real count for English: splitting by it wastes requests, and requests are the scarce
part of Privatemode's standard tier (20 a minute).

`estimate_qwen3_tokens` mirrors the tokenizer's pre-tokenizer (words, single digits, punctuation
runs, whitespace runs, newlines) and charges each piece what Qwen's 151k-token vocabulary
typically needs. Measured against the real tokenizer (bench/make_qwen_token_reference.py,
tests/fixtures/qwen_token_reference.json: 86 samples of prose, Markdown, Python, JSON and nine
languages) it is 1.12-1.24x the real count for English prose, Markdown and code (the byte bound:
3.7-4.8x) and below it for one sample of the 86 (German compounds, by 11 %). It is an estimate,
not a bound: adversarial text (random letters) exceeds it. So the pacing ledger is corrected by
the service's reported usage, `TokenCalibration` raises the estimates of a model whose reported
counts run above them, and the hard per-request limits are still checked by the byte bound.
"""

from __future__ import annotations

import math
import re
import threading
from collections import deque
from collections.abc import Mapping, Sequence

from privatemode_proxy._batching import TokenCounter, exact_counter_for
from privatemode_proxy._catalogue import ModelInfo, estimate_tokens

# Qwen2/Qwen3's pre-tokenizer, in `re` terms: contractions, an optional non-letter and a run of
# letters, one digit, a punctuation run with trailing newlines, newlines, whitespace.
_PIECES = re.compile(
    r"'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])"
    r"|(?P<word>[^\r\n\w]?[^\W\d_]+)"
    r"|(?P<digit>\d)"
    r"|(?P<punct> ?[^\s\w]+[\r\n]*|_+)"
    r"|(?P<space>\s+)"
)

SPECIAL_TOKENS_PER_INPUT = 1
"""qwen3-embedding appends `<|endoftext|>` to every input."""


def _word_tokens(word: str) -> int:
    if word.isascii():
        # Common English words (with their leading space) are one token; longer and rarer ones
        # split into pieces of about five letters.
        letters = len(word) if word[0].isalpha() else len(word) - 1
        return max(1, math.ceil(letters / 5))
    tokens = 0.0
    ascii_run = 0
    for char in word:
        code = ord(char)
        if code < 0x80:
            ascii_run += 1
        elif code >= 0x2E80:  # CJK, kana, hangul: at most one token per character
            tokens += 1.0
        else:  # accented Latin, Cyrillic, Greek, Arabic, ...: pieces of two or three letters
            tokens += 0.5
    tokens += ascii_run / 4
    return max(1, math.ceil(tokens))


def _punct_tokens(piece: str) -> int:
    if piece.isascii():
        return max(1, math.ceil(len(piece.strip(" ")) / 3))
    # Emoji and other symbols outside ASCII: up to one token per two UTF-8 bytes.
    return max(1, math.ceil(len(piece.encode("utf-8")) / 2))


def estimate_qwen3_tokens(text: str) -> int:
    """An estimate of qwen3-embedding's token count for `text`, special tokens included.

    Never more than the byte-length bound.
    """
    tokens = 0
    for match in _PIECES.finditer(text):
        kind = match.lastgroup
        piece = match.group()
        if kind == "word":
            tokens += _word_tokens(piece)
        elif kind == "punct":
            tokens += _punct_tokens(piece)
        elif kind == "space":
            # Runs of spaces (indentation) and newlines are mostly single tokens.
            tokens += 1 + len(piece) // 16
        else:  # a digit or a contraction
            tokens += 1
    bound = len(text.encode("utf-8"))
    return min(tokens, bound) + SPECIAL_TOKENS_PER_INPUT


def estimate_qwen3_token_counts(texts: Sequence[str]) -> list[int]:
    return [estimate_qwen3_tokens(t) for t in texts]


class TokenCalibration:
    """A factor that keeps estimates at or above the counts the service reports.

    After each answer, `observe(estimated, reported)` records the ratio; `factor` is the largest
    ratio of the last `window` answers, plus a margin, and never below `floor` (estimates are
    trimmed at most to that share of themselves). Until an answer arrives it is 1.
    """

    def __init__(self, *, window: int = 64, margin: float = 0.05, floor: float = 0.7) -> None:
        self._ratios: deque[float] = deque(maxlen=window)
        self._margin = margin
        self._floor = floor
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenCalibration(factor={self.factor:.3f}, samples={len(self._ratios)})"

    @property
    def factor(self) -> float:
        with self._lock:
            if not self._ratios:
                return 1.0
            return max(max(self._ratios) * (1 + self._margin), self._floor)

    def observe(self, estimated: int, reported: int | None) -> None:
        if reported is None or estimated <= 0 or reported < 0:
            return
        with self._lock:
            self._ratios.append(reported / estimated)

    def apply(self, estimate: int) -> int:
        return max(1, math.ceil(estimate * self.factor))


class TokenEstimator:
    """Token counts for pacing and for fitting requests into a window, per model.

    Exact where we ship the model's tokenizer; else the qwen3 estimate (the catalogue's remote
    models are qwen3), scaled by the model's `TokenCalibration`. An unknown model gets the byte
    bound: nothing is known about its tokenizer.
    """

    def __init__(self, counters: Mapping[str, TokenCounter]) -> None:
        self._counters = counters
        self._calibrations: dict[str, TokenCalibration] = {}

    def __repr__(self) -> str:
        return f"TokenEstimator(models={sorted(self._calibrations)})"

    def is_exact(self, model: ModelInfo | None) -> bool:
        return model is not None and exact_counter_for(model, self._counters) is not None

    def counts(self, model: ModelInfo | None, texts: Sequence[str]) -> list[int]:
        """Per-input counts (call off the event loop for large batches)."""
        if model is None:
            return [estimate_tokens(t) for t in texts]
        counter = exact_counter_for(model, self._counters)
        if counter is not None:
            return list(counter(texts))
        calibration = self._calibration(model.id)
        return [calibration.apply(estimate_qwen3_tokens(t)) for t in texts]

    def observe(self, model: ModelInfo | None, estimated: int, reported: int | None) -> None:
        """The service reported `reported` tokens for inputs we estimated at `estimated`."""
        if model is None or self.is_exact(model):
            return
        calibration = self._calibration(model.id)
        # The ratio to the raw estimate: undo the factor applied when it was made.
        calibration.observe(max(1, round(estimated / calibration.factor)), reported)

    def _calibration(self, model_id: str) -> TokenCalibration:
        calibration = self._calibrations.get(model_id)
        if calibration is None:
            calibration = self._calibrations.setdefault(model_id, TokenCalibration())
        return calibration
