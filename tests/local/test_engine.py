"""The numpy MiniLM engine against sentence-transformers' own vectors.

tests/fixtures/minilm_reference.json holds all-MiniLM-L6-v2 vectors and token counts made by
sentence-transformers (bench/make_minilm_reference.py), each text embedded on its own. Every
vector the engine returns must be within 1e-5 cosine distance of its reference, however the
texts are batched, ordered or spread over the engine's worker threads.
"""

from __future__ import annotations

import json
import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from privatemode_proxy.local._engine import (
    EmbeddingEngine,
    MiniLMEngine,
    _gelu_,
    load_default_engine,
)

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "minilm_reference.json"
MAX_COSINE_DISTANCE = 1e-5


@dataclass(frozen=True)
class Ref:
    text: str
    tokens: int
    truncated_tokens: int
    vector: np.ndarray


def _load_reference() -> list[Ref]:
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert data["dimensions"] == 384 and data["max_seq_length"] == 256
    return [
        Ref(it["text"], it["tokens"], it["truncated_tokens"], np.asarray(it["embedding"]))
        for it in data["items"]
    ]


REFERENCE = _load_reference()
TEXTS = [r.text for r in REFERENCE]
VECTORS = np.stack([r.vector for r in REFERENCE])


def cosine_distances(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    dots = np.einsum("ij,ij->i", got, want)
    distances: np.ndarray = 1.0 - dots / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    )
    return distances


def assert_matches_reference(got: np.ndarray, indices: list[int]) -> None:
    assert got.shape == (len(indices), 384)
    distances = cosine_distances(got, VECTORS[indices])
    worst = int(np.argmax(distances))
    assert distances[worst] < MAX_COSINE_DISTANCE, (
        f"text {indices[worst]} ({TEXTS[indices[worst]][:40]!r}) is {distances[worst]:.3g} "
        f"away from sentence-transformers"
    )


@pytest.fixture(scope="module")
def minilm() -> MiniLMEngine:
    engine = load_default_engine()
    assert isinstance(engine, MiniLMEngine)
    return engine


@pytest.fixture(scope="module")
def serial_small_batches() -> MiniLMEngine:
    """One worker and the smallest batches: many batches, each with few length runs."""
    return MiniLMEngine(workers=1, batch_tokens=256)


def test_the_reference_covers_what_it_should() -> None:
    counts = [r.tokens for r in REFERENCE]
    assert "" in TEXTS and any(t.strip() == "" and t for t in TEXTS)
    assert any(any(ord(c) > 0x3000 for c in t) for t in TEXTS)  # CJK
    assert any(any(ord(c) > 0x1F000 for c in t) for t in TEXTS)  # emoji
    assert any(n > 1000 for n in counts) and any(256 < n < 400 for n in counts)
    assert 256 in counts and 257 in counts  # both sides of the limit
    assert len(REFERENCE) >= 30


def test_is_an_embedding_engine(minilm: MiniLMEngine) -> None:
    assert isinstance(minilm, EmbeddingEngine)
    assert minilm.model_id == "all-minilm-l6-v2"
    assert minilm.dimensions == 384
    assert minilm.max_tokens_per_input == 256


@pytest.mark.parametrize("index", range(len(REFERENCE)), ids=lambda i: f"{i}:{TEXTS[i][:16]!r}")
def test_each_text_alone_matches_sentence_transformers(minilm: MiniLMEngine, index: int) -> None:
    assert_matches_reference(minilm.embed([TEXTS[index]]), [index])


def test_one_mixed_batch_matches_and_equals_the_texts_alone(minilm: MiniLMEngine) -> None:
    together = minilm.embed(TEXTS)
    assert_matches_reference(together, list(range(len(TEXTS))))
    alone = np.concatenate([minilm.embed([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, rtol=0, atol=2e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_order_of_inputs_does_not_change_vectors(minilm: MiniLMEngine, seed: int) -> None:
    indices = list(range(len(TEXTS)))
    random.Random(seed).shuffle(indices)
    got = minilm.embed([TEXTS[i] for i in indices])
    assert_matches_reference(got, indices)
    reversed_got = minilm.embed([TEXTS[i] for i in reversed(indices)])
    np.testing.assert_allclose(reversed_got[::-1], got, rtol=0, atol=2e-6)


def test_many_batches_on_all_workers_keep_input_order(minilm: MiniLMEngine) -> None:
    # 8 copies of every text, shuffled: many batches per worker, and each vector must go back
    # to its input's position.
    indices = [i for i in range(len(TEXTS)) for _ in range(8)]
    random.Random(7).shuffle(indices)
    got = minilm.embed([TEXTS[i] for i in indices])
    assert_matches_reference(got, indices)
    # Copies of one text are identical wherever they land.
    first = {i: got[pos] for pos, i in reversed(list(enumerate(indices)))}
    for pos, i in enumerate(indices):
        np.testing.assert_allclose(got[pos], first[i], rtol=0, atol=2e-6)


def test_serial_engine_with_small_batches_agrees(serial_small_batches: MiniLMEngine) -> None:
    assert serial_small_batches.workers == 1
    indices = list(range(len(TEXTS))) * 2
    random.Random(11).shuffle(indices)
    assert_matches_reference(serial_small_batches.embed([TEXTS[i] for i in indices]), indices)


def test_vectors_are_unit_float32_rows(minilm: MiniLMEngine) -> None:
    got = minilm.embed(TEXTS)
    assert got.dtype == np.float32
    assert got.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(got.astype(np.float64), axis=1), 1.0, atol=1e-6)


def test_empty_input_gives_an_empty_matrix(minilm: MiniLMEngine) -> None:
    got = minilm.embed([])
    assert got.shape == (0, 384) and got.dtype == np.float32
    assert minilm.count_tokens([]) == []


def test_token_counts_are_untruncated_and_include_special_tokens(minilm: MiniLMEngine) -> None:
    assert minilm.count_tokens(TEXTS) == [r.tokens for r in REFERENCE]
    assert minilm.count_tokens(["", "hello"]) == [2, 3]  # [CLS] [SEP], [CLS] hello [SEP]
    assert minilm.count_tokens([" ".join(["data"] * 1000)]) == [1002]


def test_truncation_at_256_tokens_with_special_tokens(minilm: MiniLMEngine) -> None:
    # "data" is one token: 254 words fill the 256 positions with [CLS] and [SEP]; whatever
    # follows is cut, so longer texts with the same first 254 tokens embed identically.
    words = ["data"] * 254
    base, one_more, many_more = minilm.embed(
        [" ".join(words), " ".join([*words, "secret"]), " ".join(words + ["other"] * 800)]
    )
    np.testing.assert_allclose(one_more, base, rtol=0, atol=2e-6)
    np.testing.assert_allclose(many_more, base, rtol=0, atol=2e-6)
    # ... and one token fewer is a different input.
    shorter = minilm.embed([" ".join(words[:-1])])[0]
    assert cosine_distances(shorter[None], base[None])[0] > 1e-6
    # The references agree on where truncation falls.
    for ref in REFERENCE:
        assert ref.truncated_tokens == min(ref.tokens, 256)


def test_rejects_what_is_not_a_list_of_strings(minilm: MiniLMEngine) -> None:
    with pytest.raises(TypeError, match="input 1 is int"):
        minilm.embed(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a single string"):
        minilm.embed("a string is not a list")
    with pytest.raises(TypeError, match="input 0 is bytes"):
        minilm.count_tokens([b"bytes"])  # type: ignore[list-item]


def test_concurrent_calls_from_threads_are_all_correct(minilm: MiniLMEngine) -> None:
    def job(seed: int) -> tuple[list[int], np.ndarray]:
        indices = list(range(len(TEXTS)))
        random.Random(seed).shuffle(indices)
        return indices, minilm.embed([TEXTS[i] for i in indices])

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(job, range(6)))
    for indices, got in results:
        assert_matches_reference(got, indices)


def test_blas_threads_are_restored_after_embedding(minilm: MiniLMEngine) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()]
    minilm.embed(TEXTS)
    # Also from other threads, one after the other: each call takes and gives back the limit.
    for _ in range(2):
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(minilm.embed, TEXTS).result()
    after = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()]
    assert after == before


def _record_batch_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads that compute each batch from now on (the test's own spy)."""
    names: list[str] = []
    compute = MiniLMEngine._embed_sorted

    def spy(self: MiniLMEngine, ids: list[np.ndarray]) -> np.ndarray:
        names.append(threading.current_thread().name)
        return compute(self, ids)

    monkeypatch.setattr(MiniLMEngine, "_embed_sorted", spy)
    return names


def test_batches_run_on_the_engine_workers(
    minilm: MiniLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("threadpoolctl")
    if minilm.workers < 2:
        pytest.skip("one core: nothing to run in parallel")
    names = _record_batch_threads(monkeypatch)
    indices = list(range(len(TEXTS))) * 2
    assert_matches_reference(minilm.embed([TEXTS[i] for i in indices]), indices)
    assert len(names) >= minilm.workers
    assert len(set(names)) == minilm.workers
    assert all(n.startswith("minilm") for n in names)


def test_a_blas_limit_held_elsewhere_is_respected(
    minilm: MiniLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another thread holds its own BLAS limit (threadpoolctl lets one thread at a time do so):
    # the engine cannot hold BLAS to one thread, so it computes its batches one after the other
    # in the calling thread instead of oversubscribing the cores, with the same results.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    names = _record_batch_threads(monkeypatch)
    held = threading.Event()
    release = threading.Event()

    def hold_limit() -> list[int]:
        with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
            held.set()
            release.wait(timeout=120)
            return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()]

    with ThreadPoolExecutor(max_workers=1) as pool:
        holder = pool.submit(hold_limit)
        assert held.wait(timeout=30)
        try:
            indices = list(range(len(TEXTS)))
            got = minilm.embed([TEXTS[i] for i in indices])
        finally:
            release.set()
        threads_seen_by_holder = holder.result()
    assert_matches_reference(got, indices)
    assert len(names) > 1 and set(names) == {threading.current_thread().name}
    assert all(n == 2 for n in threads_seen_by_holder)


def test_default_engine_is_loaded_once_per_process() -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        engines = list(pool.map(lambda _: load_default_engine(), range(8)))
    assert all(e is engines[0] for e in engines)
    assert load_default_engine() is engines[0]


def test_gelu_uses_the_exact_normal_cdf() -> None:
    x = np.concatenate([np.linspace(-12, 12, 200_001), [0.0, -0.0, 1e-30, -1e-30]])
    want = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
    got = x.astype(np.float32)
    scratch = [np.empty_like(got) for _ in range(3)]
    _gelu_(got, *scratch)
    error = np.abs(got.astype(np.float64) - want) / np.maximum(1.0, np.abs(x))
    assert error.max() < 1e-6
    # The tanh approximation of GELU is ~1e-3 off here: this is the erf form.
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert np.abs(tanh_form - want).max() > 1e-4


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers"):
        MiniLMEngine(workers=0)
