"""The proxy's pure parts: splitting, vector encodings, request validation, CLI helpers."""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from privatemode_proxy import (
    CATALOGUE,
    BatchLimits,
    ModelInfo,
    ProxyConfig,
    SessionConfig,
    TokenCounter,
    UpstreamSession,
    estimate_tokens,
    pinned_manifest,
    split_batches,
)
from privatemode_proxy._batching import plan_tokens
from privatemode_proxy._cli import (
    _RedactFilter,
    api_base_url,
    build_config,
    build_parser,
    read_api_key,
)
from privatemode_proxy._service import EmbeddingsService, parse_embeddings_request
from privatemode_proxy.openai import (
    ApiError,
    VectorFormatError,
    decode_embeddings,
    encode_embeddings,
    reduce_dimensions,
)

# -- splitting ---------------------------------------------------------------------------------


@given(
    counts=st.lists(st.integers(min_value=1, max_value=50), max_size=60),
    max_inputs=st.integers(min_value=1, max_value=10),
    max_tokens=st.integers(min_value=1, max_value=120),
)
def test_split_batches_covers_in_order_within_limits(
    counts: list[int], max_inputs: int, max_tokens: int
) -> None:
    ranges = split_batches(counts, max_inputs=max_inputs, max_tokens=max_tokens)
    flat = [i for start, end in ranges for i in range(start, end)]
    assert flat == list(range(len(counts)))  # every input once, in order
    for start, end in ranges:
        assert end - start <= max_inputs
        total = sum(counts[start:end])
        # within the token limit, unless a single input alone is over it
        assert total <= max_tokens or end - start == 1
    # greedy: each range was closed only because the next input would break a limit
    for s1, e1 in ranges[:-1]:
        assert e1 - s1 >= max_inputs or sum(counts[s1 : e1 + 1]) > max_tokens


def test_split_batches_examples() -> None:
    assert split_batches([], max_inputs=3, max_tokens=10) == []
    assert split_batches([1] * 7, max_inputs=3, max_tokens=100) == [(0, 3), (3, 6), (6, 7)]
    assert split_batches([4, 4, 4, 20, 1], max_inputs=10, max_tokens=10) == [
        (0, 2),
        (2, 3),
        (3, 4),
        (4, 5),
    ]


def test_batch_limits() -> None:
    qwen = CATALOGUE["qwen3-embedding-4b"]
    assert BatchLimits().inputs_for(qwen) == qwen.max_inputs_per_request
    assert BatchLimits(max_inputs_per_request=5).inputs_for(qwen) == 5
    assert BatchLimits(max_tokens_per_request=10**9).tokens_for(qwen) == qwen.max_tokens_per_request
    with pytest.raises(ValueError, match="at least 1"):
        BatchLimits(max_inputs_per_request=0)


@given(st.text(max_size=200))
def test_estimate_never_under_counts_bytes(text: str) -> None:
    assert estimate_tokens(text) >= len(text.encode("utf-8"))


# -- encodings ---------------------------------------------------------------------------------


def _matrix(n: int = 5, d: int = 7, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_base64_round_trip_is_exact_and_openai_layout() -> None:
    m = _matrix()
    data = encode_embeddings(m, "base64")
    assert [d["index"] for d in data] == list(range(5))
    first = base64.b64decode(data[0]["embedding"])
    assert first == m[0].astype("<f4").tobytes()  # little-endian float32
    assert np.array_equal(decode_embeddings(data, 5), m)


def test_float_rows_decode_in_index_order() -> None:
    m = _matrix()
    data = [
        {"object": "embedding", "index": i, "embedding": [float(x) for x in m[i]]}
        for i in reversed(range(5))
    ]
    assert np.array_equal(decode_embeddings(data, 5), m)


@pytest.mark.parametrize(
    ("data", "count", "fragment"),
    [
        (None, 1, "no 'data'"),
        ([], 1, "0 vectors for 1"),
        ([{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}], 2, "repeated"),
        ([{"index": 3, "embedding": [1.0]}], 1, "out of range"),
        ([{"index": 0, "embedding": "!!notbase64"}], 1, "base64"),
        ([{"index": 0, "embedding": base64.b64encode(b"abc").decode()}], 1, "lengths"),
        (
            [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}],
            2,
            "unequal",
        ),
        ([{"index": 0, "embedding": ["a"]}], 1, "non-number"),
    ],
)
def test_decode_rejects_malformed(data: object, count: int, fragment: str) -> None:
    with pytest.raises(VectorFormatError, match=fragment):
        decode_embeddings(data, count)


def test_reduce_dimensions_renormalises() -> None:
    m = _matrix(4, 64)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    r = reduce_dimensions(m, 16)
    assert r.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), 1.0, atol=1e-6)
    # same direction as the leading slice
    cos = np.sum(r * m[:, :16], axis=1) / np.linalg.norm(m[:, :16], axis=1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)


def test_float_json_is_float32_exact() -> None:
    import orjson

    m = _matrix(3, 50)
    body = orjson.dumps({"data": encode_embeddings(m, "float")}, option=orjson.OPT_SERIALIZE_NUMPY)
    back = np.asarray([d["embedding"] for d in orjson.loads(body)["data"]], dtype=np.float32)
    assert np.array_equal(back, m)


# -- request validation ------------------------------------------------------------------------


def test_parse_keeps_other_fields_and_hides_texts() -> None:
    req = parse_embeddings_request(
        b'{"model": "m", "input": "secret words", "user": "u", "dimensions": 8}'
    )
    assert req.texts == ["secret words"]
    assert req.passthrough == {"user": "u"}
    assert req.dimensions == 8 and req.encoding_format == "float"
    assert "secret words" not in repr(req)


def test_parse_error_does_not_quote_the_body() -> None:
    with pytest.raises(ApiError) as info:
        parse_embeddings_request(b'{"model": "m", "input": "my secret text", }')
    assert "my secret text" not in info.value.message


# -- CLI ---------------------------------------------------------------------------------------


def test_api_base_url() -> None:
    assert api_base_url("api.privatemode.ai:443") == "https://api.privatemode.ai:443"
    assert api_base_url("http://127.0.0.1:9000/") == "http://127.0.0.1:9000"
    assert api_base_url("https://example.org") == "https://example.org"
    with pytest.raises(ValueError):
        api_base_url("ftp://x")


def test_read_api_key(tmp_path: Path) -> None:
    assert read_api_key(None) is None
    assert read_api_key("abc") == "abc"
    key_file = tmp_path / "key"
    key_file.write_text("  k-123  \n")
    assert read_api_key(f"@{key_file}") == "k-123"
    with pytest.raises(ValueError, match="cannot read"):
        read_api_key(f"@{tmp_path / 'missing'}")


def test_help_documents_every_flag() -> None:
    text = build_parser().format_help()
    for flag in (
        "--apiKey",
        "--apiEndpoint",
        "--port",
        "--host",
        "--workspace",
        "--manifestPath",
        "--tlsCertPath",
        "--tlsKeyPath",
        "--nvidiaOCSPAllowUnknown",
        "--nvidiaOCSPRevokedGracePeriod",
        "--log-level",
        "--log-format",
        "--local",
        "--trustedRoot",
        "--maxInputsPerRequest",
        "--maxTokensPerRequest",
        "--maxConcurrentSubrequests",
        "--allowedHosts",
        "--allowedOrigins",
        "--maxClientInputs",
        "--maxActiveRequests",
        "--maxQueuedRequests",
        "--headerTimeout",
        "--bodyTimeout",
        "--maxConnections",
        "--upstreamTimeout",
        "local-backend",
    ):
        assert flag in text, flag


def test_config_from_flags(tmp_path: Path, vectors_dir: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes((vectors_dir / "snp/contrast/synthetic_manifest.json").read_bytes())
    args = build_parser().parse_args(
        [
            "--apiKey",
            "sk-test",
            "--apiEndpoint",
            "http://127.0.0.1:9000",
            "--manifestPath",
            str(manifest),
            "--workspace",
            str(tmp_path),
            "--maxInputsPerRequest",
            "7",
            "--nvidiaOCSPAllowUnknown=false",
            "--nvidiaOCSPRevokedGracePeriod",
            "0",
        ]
    )
    config = build_config(args)
    assert config.session.api_url == "http://127.0.0.1:9000"
    assert config.session.api_key == "sk-test"
    assert "sk-test" not in repr(config)
    assert config.limits.max_inputs_per_request == 7
    assert config.session.ocsp_allow_unknown is False
    assert config.local_mode is False


def test_contradictory_ocsp_flags_are_refused(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["--nvidiaOCSPAllowUnknown", "false", "--manifestPath", str(tmp_path / "m")]
    )
    with pytest.raises(ValueError, match="contradictory"):
        build_config(args)


def test_redact_filter_hides_the_api_key() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key is %s", ("sk-secret",), None)
    assert _RedactFilter(["sk-secret"]).filter(record)
    assert "sk-secret" not in record.getMessage()
    assert "[REDACTED]" in record.getMessage()


# -- token planning and dimensions ---------------------------------------------------------------


def _counting(counts: dict[str, int], calls: list[list[str]]) -> TokenCounter:
    def count(texts: Sequence[str]) -> list[int]:
        calls.append(list(texts))
        return [counts[t] for t in texts]

    return count


def test_plan_tokens_counts_exactly_only_where_a_bound_could_break_a_limit() -> None:
    local = CATALOGUE["all-minilm-l6-v2"]
    long_text = "x" * 300  # bound 302 > 256
    counts = {"a": 3, "b": 3, long_text: 250}
    calls: list[list[str]] = []
    counters = {local.id: _counting(counts, calls)}

    plan = plan_tokens(local, ["a", "b"], 10_000, counters)
    assert calls == []  # bounds are far below every limit: no tokenizing at all
    assert plan.counts == [estimate_tokens("a"), estimate_tokens("b")] and plan.too_long == []

    plan = plan_tokens(local, ["a", long_text], 10_000, counters)
    assert calls == [[long_text]]  # only the suspect
    assert plan.counts == [estimate_tokens("a"), 250] and plan.too_long == []

    counts[long_text] = 300
    plan = plan_tokens(local, ["a", long_text], 10_000, counters)
    assert plan.too_long == [(1, 300)]

    calls.clear()
    plan = plan_tokens(local, ["a", "b", long_text], 100, counters)  # bounds over the request
    assert calls == [["a", "b", long_text]]
    assert plan.counts == [3, 3, 300]


def test_plan_tokens_without_tokenizer_uses_bounds_and_refuses_nothing() -> None:
    qwen = CATALOGUE["qwen3-embedding-4b"]
    text = "y" * 40_000  # bound over the 32,000 per input, but only upstream can tell
    plan = plan_tokens(qwen, [text], 300_000, {})
    assert plan.counts == [estimate_tokens(text)] and plan.too_long == []


def _service(catalogue: dict[str, ModelInfo]) -> EmbeddingsService:
    session = SessionConfig(
        api_url="http://127.0.0.1:9", trusted_roots=(), manifest=pinned_manifest(b"{}")
    )
    config = ProxyConfig(session=session, catalogue=catalogue)
    return EmbeddingsService(config, UpstreamSession(session))


def test_matryoshka_model_is_reduced_when_upstream_ignores_dimensions() -> None:
    model = ModelInfo(
        id="mrl",
        native_dimensions=64,
        min_dimensions=8,
        matryoshka=True,
        max_tokens_per_input=100,
        max_inputs_per_request=10,
        max_tokens_per_request=1000,
    )
    service = _service({"mrl": model})
    full = _matrix(3, 64)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    req = parse_embeddings_request(b'{"model": "mrl", "input": ["a", "b", "c"], "dimensions": 16}')
    reduced = service._apply_dimensions(model, req, full)
    assert reduced.shape == (3, 16)
    np.testing.assert_allclose(reduced, reduce_dimensions(full, 16))
    # already the asked length: kept as is
    assert service._apply_dimensions(model, req, reduced) is reduced


def test_wrong_vector_length_is_an_error() -> None:
    local = CATALOGUE["all-minilm-l6-v2"]
    service = _service({local.id: local})
    req = parse_embeddings_request(b'{"model": "all-minilm-l6-v2", "input": ["a"]}')
    with pytest.raises(ApiError) as info:
        service._apply_dimensions(local, req, _matrix(1, 100))
    assert info.value.status_code == 502
    assert "length 100; expected 384" in info.value.message
