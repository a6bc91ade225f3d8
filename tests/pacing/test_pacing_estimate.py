"""qwen3 token estimates against real counts of Qwen's tokenizer (a recorded fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from privatemode_proxy._catalogue import CATALOGUE, LOCAL_MODEL_ID, estimate_tokens
from privatemode_proxy._token_estimate import (
    TokenCalibration,
    TokenEstimator,
    estimate_qwen3_tokens,
)

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "qwen_token_reference.json"


@pytest.fixture(scope="module")
def reference() -> list[dict[str, object]]:
    items: list[dict[str, object]] = json.loads(FIXTURE.read_text("utf-8"))["items"]
    return items


def test_estimate_is_far_closer_than_the_byte_bound(reference: list[dict[str, object]]) -> None:
    english = [it for it in reference if it["kind"] in ("prose", "markdown", "python")]
    real = sum(int(str(it["tokens"])) for it in english)
    estimate = sum(estimate_qwen3_tokens(str(it["text"])) for it in english)
    bound = sum(estimate_tokens(str(it["text"])) for it in english)
    assert real <= estimate <= 1.3 * real
    assert bound >= 3.5 * real  # what splitting used before: ~4x


def test_estimate_rarely_under_and_never_far_under(reference: list[dict[str, object]]) -> None:
    ratios = [estimate_qwen3_tokens(str(it["text"])) / int(str(it["tokens"])) for it in reference]
    assert sum(r < 1 for r in ratios) <= 2
    assert min(ratios) >= 0.85


def test_estimate_never_above_the_byte_bound() -> None:
    for text in ["", "a", "1234567890", "🙂" * 10, "x" * 1000, "東京" * 50, " \n\t " * 20]:
        assert 1 <= estimate_qwen3_tokens(text) <= len(text.encode("utf-8")) + 1


def test_calibration_follows_reported_usage() -> None:
    calibration = TokenCalibration(margin=0.05, floor=0.5)
    assert calibration.apply(100) == 100  # nothing reported yet
    for _ in range(5):
        calibration.observe(100, 80)
    assert 84 <= calibration.apply(100) <= 85  # 0.8 x 1.05, rounded up
    calibration.observe(100, 130)  # an under-estimate raises it at once
    assert calibration.apply(100) >= 130


def test_estimator_exact_for_shipped_tokenizer_and_calibrated_for_qwen3() -> None:
    estimator = TokenEstimator({LOCAL_MODEL_ID: lambda texts: [len(t) for t in texts]})
    assert estimator.counts(CATALOGUE[LOCAL_MODEL_ID], ["abc", "de"]) == [3, 2]
    qwen = CATALOGUE["qwen3-embedding-4b"]
    text = "The proxy paces requests per API key so that ingestion never draws a 429."
    first = estimator.counts(qwen, [text])[0]
    assert first == estimate_qwen3_tokens(text)
    estimator.observe(qwen, first, first // 2)
    assert estimator.counts(qwen, [text])[0] < first
    assert estimator.counts(None, [text]) == [estimate_tokens(text)]
