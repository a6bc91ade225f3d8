"""The client core against ScriptedOpenAIServer: packing, order, concurrency, retries, progress,
the empty/over-long policy and error shapes. (The same behaviours against the real local stack
are in test_integrations_local_stack.py.)"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, ClassVar

import numpy as np
import pytest
from privatemode_proxy._serving import free_port
from scripted_server import FAST_RETRIES, Scripted, ScriptedOpenAIServer, scripted_vector

from privatemode_integrations import (
    APIConnectionError,
    BadRequestError,
    EmbeddingsClient,
    InputTooLongError,
    InternalServerError,
    NotFoundError,
    PrivatemodeEmbedding,
    PrivatemodeEmbeddings,
    RateLimitError,
)
from privatemode_integrations import _client as client_module


def make_client(server: ScriptedOpenAIServer, **kwargs: Any) -> EmbeddingsClient:
    kwargs.setdefault("retry_policy", FAST_RETRIES)
    return EmbeddingsClient(base_url=server.base_url, model=server.model, **kwargs)


def texts_n(n: int) -> list[str]:
    return [f"document number {i}" for i in range(n)]


def expected(texts: list[str]) -> np.ndarray:
    return np.stack([scripted_vector(t) for t in texts])


# ---- order and packing ------------------------------------------------------------------


def test_order_across_many_batches_sync(scripted: ScriptedOpenAIServer) -> None:
    texts = texts_n(203)
    scripted.delay = 0.005
    with make_client(scripted, batch_size=7, max_concurrency=4) as client:
        vectors = client.embed(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (203, 16)
    np.testing.assert_array_equal(vectors, expected(texts))
    sent = [s.body["input"] for s in scripted.embedding_requests()]
    assert len(sent) == 29  # ceil(203 / 7)
    assert sorted(t for batch in sent for t in batch) == sorted(texts)
    assert all(s.body["encoding_format"] == "base64" for s in scripted.embedding_requests())


async def test_order_across_many_batches_async(scripted: ScriptedOpenAIServer) -> None:
    texts = texts_n(203)
    scripted.delay = 0.005
    client = make_client(scripted, batch_size=7, max_concurrency=4)
    vectors = await client.aembed(texts)
    await client.aclose()
    np.testing.assert_array_equal(vectors, expected(texts))
    assert len(scripted.embedding_requests()) == 29


def test_packs_by_the_limits_the_server_publishes(scripted: ScriptedOpenAIServer) -> None:
    scripted.models_limits = {"max_inputs_per_request": 10}
    with make_client(scripted) as client:
        client.embed(texts_n(25))
        client.embed(texts_n(3))
        assert client.limits().source == "server"
        assert client.limits().max_inputs_per_request == 10
    sizes = [len(s.body["input"]) for s in scripted.embedding_requests()]
    assert sorted(sizes[:3]) == [5, 10, 10] and sizes[3:] == [3]
    assert len(scripted.model_requests()) == 1  # looked up once, then cached


def test_packs_by_token_estimate(scripted: ScriptedOpenAIServer) -> None:
    # Each text is 30 ASCII bytes -> estimated 32 tokens; a 100-token budget fits 3 per request.
    scripted.models_limits = {"max_tokens_per_request": 100, "max_inputs_per_request": 1000}
    texts = [f"{i:030d}" for i in range(10)]
    with make_client(scripted) as client:
        vectors = client.embed(texts)
    np.testing.assert_array_equal(vectors, expected(texts))
    assert sorted(len(s.body["input"]) for s in scripted.embedding_requests()) == [1, 3, 3, 3]


def test_fewest_requests_when_nothing_limits(scripted: ScriptedOpenAIServer) -> None:
    scripted.models_limits = {"max_inputs_per_request": 2048, "max_tokens_per_request": 300_000}
    with make_client(scripted) as client:
        client.embed(texts_n(500))
    assert [len(s.body["input"]) for s in scripted.embedding_requests()] == [500]


def test_limits_fall_back_to_catalogue_then_defaults(scripted: ScriptedOpenAIServer) -> None:
    # The scripted server lists only its own model, without limits.
    with EmbeddingsClient(base_url=scripted.base_url, model="all-minilm-l6-v2") as client:
        limits = client.limits()
    assert limits.source == "catalogue" and limits.max_tokens_per_input == 256
    with make_client(scripted) as client:
        assert client.limits().source == "default"


def test_unknown_model_gets_generous_defaults(scripted: ScriptedOpenAIServer) -> None:
    # Nothing describes the scripted model: never fewer inputs per request than
    # langchain-openai's 1,000 (the OpenAI API's own 2,048 here).
    texts = texts_n(2500)
    with make_client(scripted) as client:
        vectors = client.embed(texts)
        assert client.limits().source == "default"
        assert client.limits().max_inputs_per_request >= 1000
    np.testing.assert_array_equal(vectors, expected(texts))
    assert [len(s.body["input"]) for s in scripted.embedding_requests()] == [2048, 452]


def test_llamaindex_sync_batches_are_concurrent_and_bounded(
    scripted: ScriptedOpenAIServer,
) -> None:
    # LlamaIndex's own loop sends one embed_batch_size batch at a time; ours sends them together,
    # at most max_concurrency at once, each request no larger than embed_batch_size.
    scripted.delay = 0.1
    embed = PrivatemodeEmbedding(
        base_url=scripted.base_url, model_name=scripted.model, embed_batch_size=2, max_concurrency=3
    )
    texts = texts_n(13)
    vectors = embed.get_text_embedding_batch(texts)
    np.testing.assert_allclose(vectors, expected(texts))
    sizes = sorted(len(s.body["input"]) for s in scripted.embedding_requests())
    assert sizes == [1] + [2] * 6
    assert scripted.max_in_flight == 3


def test_single_query_needs_no_model_lookup(scripted: ScriptedOpenAIServer) -> None:
    with make_client(scripted) as client:
        vector = client.embed(["one query"])
    np.testing.assert_array_equal(vector[0], scripted_vector("one query"))
    assert scripted.model_requests() == []
    assert len(scripted.embedding_requests()) == 1


def test_connections_are_reused_across_calls(scripted: ScriptedOpenAIServer) -> None:
    with make_client(scripted, max_concurrency=1) as client:
        for _ in range(3):
            client.embed(["same connection"])
    ports = {s.client_port for s in scripted.embedding_requests()}
    assert len(ports) == 1


async def test_async_connections_are_reused_across_calls(scripted: ScriptedOpenAIServer) -> None:
    client = make_client(scripted, max_concurrency=1)
    for _ in range(3):
        await client.aembed(["same connection"])
    await client.aclose()
    assert len({s.client_port for s in scripted.embedding_requests()}) == 1


# ---- bounded concurrency ------------------------------------------------------------------


def test_sync_concurrency_is_bounded(scripted: ScriptedOpenAIServer) -> None:
    scripted.delay = 0.1
    with make_client(scripted, batch_size=2, max_concurrency=3) as client:
        client.embed(texts_n(40))
    assert len(scripted.embedding_requests()) == 20
    assert scripted.max_in_flight == 3


async def test_async_concurrency_is_bounded(scripted: ScriptedOpenAIServer) -> None:
    scripted.delay = 0.1
    client = make_client(scripted, batch_size=2, max_concurrency=3)
    await client.aembed(texts_n(40))
    await client.aclose()
    assert len(scripted.embedding_requests()) == 20
    assert scripted.max_in_flight == 3


def test_bound_holds_across_concurrent_calls_on_one_client(scripted: ScriptedOpenAIServer) -> None:
    scripted.delay = 0.1
    errors: list[BaseException] = []
    with make_client(scripted, batch_size=2, max_concurrency=2) as client:

        def work() -> None:
            try:
                client.embed(texts_n(12))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert len(scripted.embedding_requests()) == 18
    assert scripted.max_in_flight == 2


async def test_llamaindex_unbounded_gather_is_still_bounded(
    scripted: ScriptedOpenAIServer,
) -> None:
    # LlamaIndex's base class gathers all its chunks at once when num_workers is unset.
    scripted.delay = 0.1
    embed = PrivatemodeEmbedding(
        base_url=scripted.base_url, model_name=scripted.model, embed_batch_size=2, max_concurrency=2
    )
    vectors = await embed.aget_text_embedding_batch(texts_n(16))
    np.testing.assert_allclose(vectors, expected(texts_n(16)))
    assert len(scripted.embedding_requests()) == 8
    assert scripted.max_in_flight == 2


async def test_langchain_async_is_concurrent_not_sequential(
    scripted: ScriptedOpenAIServer,
) -> None:
    scripted.delay = 0.2
    embed = PrivatemodeEmbeddings(
        base_url=scripted.base_url, model=scripted.model, batch_size=1, max_concurrency=4
    )
    start = time.monotonic()
    await embed.aembed_documents(texts_n(8))
    elapsed = time.monotonic() - start
    assert scripted.max_in_flight == 4
    assert elapsed < 8 * 0.2  # sequential would take at least 1.6 s
    print(f"8 requests of 0.2 s at concurrency 4: {elapsed:.2f} s")


# ---- retries ------------------------------------------------------------------------------


def test_429_with_retry_after_is_honoured(scripted: ScriptedOpenAIServer) -> None:
    scripted.script(Scripted(429, "rate limited", headers={"Retry-After": "1"}))
    with make_client(scripted, max_retries=2) as client:
        vectors = client.embed(["a", "b"])
    np.testing.assert_array_equal(vectors, expected(["a", "b"]))
    seen = scripted.embedding_requests()
    assert len(seen) == 2
    assert seen[1].at - seen[0].at >= 0.95


async def test_429_with_retry_after_is_honoured_async(scripted: ScriptedOpenAIServer) -> None:
    scripted.script(Scripted(429, "rate limited", headers={"Retry-After": "1"}))
    client = make_client(scripted, max_retries=2)
    vectors = await client.aembed(["a", "b"])
    await client.aclose()
    np.testing.assert_array_equal(vectors, expected(["a", "b"]))
    seen = scripted.embedding_requests()
    assert len(seen) == 2 and seen[1].at - seen[0].at >= 0.95


def test_503_is_retried_then_succeeds(scripted: ScriptedOpenAIServer) -> None:
    scripted.script(Scripted(503, "busy"), Scripted(503, "busy"))
    with make_client(scripted, max_retries=2) as client:
        vectors = client.embed(["x"])
    np.testing.assert_array_equal(vectors, expected(["x"]))
    assert len(scripted.embedding_requests()) == 3


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_max_retries_means_exactly_that(scripted: ScriptedOpenAIServer, max_retries: int) -> None:
    scripted.script(*[Scripted(503, "busy")] * 10)
    with make_client(scripted, max_retries=max_retries) as client, pytest.raises(
        InternalServerError
    ) as info:
        client.embed(["x"])
    assert len(scripted.embedding_requests()) == max_retries + 1
    assert info.value.attempts == max_retries + 1
    assert info.value.status_code == 503 and "busy" in str(info.value)


async def test_max_retries_means_exactly_that_async(scripted: ScriptedOpenAIServer) -> None:
    scripted.script(*[Scripted(429, "slow down")] * 10)
    client = make_client(scripted, max_retries=2)
    with pytest.raises(RateLimitError) as info:
        await client.aembed(["x"])
    await client.aclose()
    assert len(scripted.embedding_requests()) == 3 and info.value.attempts == 3


@pytest.mark.parametrize("status", [408, 409, 500, 502, 504])
def test_other_retryable_statuses(scripted: ScriptedOpenAIServer, status: int) -> None:
    scripted.script(Scripted(status, "transient"))
    with make_client(scripted, max_retries=1) as client:
        client.embed(["x"])
    assert len(scripted.embedding_requests()) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_other_4xx_are_never_retried(scripted: ScriptedOpenAIServer, status: int) -> None:
    scripted.script(Scripted(status, "you sent something wrong"))
    with make_client(scripted, max_retries=5) as client, pytest.raises(Exception) as info:
        client.embed(["x"])
    assert len(scripted.embedding_requests()) == 1
    assert getattr(info.value, "status_code", None) == status
    assert "you sent something wrong" in str(info.value)


def test_400_is_not_retried(scripted: ScriptedOpenAIServer) -> None:
    scripted.script(Scripted(400, "bad 'dimensions'", param="dimensions"))
    with make_client(scripted, max_retries=3) as client, pytest.raises(BadRequestError) as info:
        client.embed(["x", "y"])
    assert len(scripted.embedding_requests()) == 1
    assert info.value.attempts == 1 and info.value.param == "dimensions"


def test_frameworks_do_not_nest_retries(scripted: ScriptedOpenAIServer) -> None:
    # llama-index-embeddings-openai made 6 attempts for max_retries=2; we make exactly 3.
    scripted.script(*[Scripted(503, "busy")] * 10)
    lc = PrivatemodeEmbeddings(base_url=scripted.base_url, model=scripted.model, max_retries=2)
    with pytest.raises(InternalServerError):
        lc.embed_documents(["x"])
    assert len(scripted.embedding_requests()) == 3
    scripted.reset()
    scripted.script(*[Scripted(503, "busy")] * 10)
    li = PrivatemodeEmbedding(base_url=scripted.base_url, model_name=scripted.model, max_retries=2)
    with pytest.raises(InternalServerError):
        li.get_text_embedding_batch(["x"])
    assert len(scripted.embedding_requests()) == 3


def test_connection_errors_are_retried_then_reported() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with EmbeddingsClient(base_url=url, max_retries=2, retry_policy=FAST_RETRIES) as client:
        with pytest.raises(APIConnectionError) as info:
            client.embed(["x"])
    assert info.value.attempts == 3
    assert url in str(info.value) and "PRIVATEMODE_BASE_URL" in str(info.value)


def test_a_failed_batch_fails_the_whole_call(scripted: ScriptedOpenAIServer) -> None:
    scripted.delay = 0.05
    scripted.script(Scripted(400, "input[1] is not acceptable", param="input[1]"))
    with make_client(scripted, batch_size=5, max_concurrency=1) as client:
        with pytest.raises(BadRequestError) as info:
            client.embed(texts_n(50))
    # Sequential at concurrency 1: the first batch failed and nothing more was sent.
    assert len(scripted.embedding_requests()) == 1
    assert info.value.input_index == 1


# ---- progress bar -------------------------------------------------------------------------


class RecordingTqdm(client_module.tqdm):  # type: ignore[misc,name-defined]
    instances: ClassVar[list[RecordingTqdm]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.updates: list[int] = []
        self.shown = not self.disable
        self.final_n: int | None = None
        RecordingTqdm.instances.append(self)

    def update(self, n: float | None = 1) -> bool | None:
        self.updates.append(int(n or 0))
        return super().update(n)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.final_n = int(self.n)
        super().close()


@pytest.fixture
def recording_tqdm(monkeypatch: pytest.MonkeyPatch) -> type[RecordingTqdm]:
    RecordingTqdm.instances = []
    monkeypatch.setattr(client_module, "tqdm", RecordingTqdm)
    return RecordingTqdm


def test_progress_bar_advances_per_finished_batch(
    scripted: ScriptedOpenAIServer, recording_tqdm: type[RecordingTqdm], capsys: Any
) -> None:
    with make_client(scripted, batch_size=10, show_progress_bar=True) as client:
        client.embed(texts_n(25))
    (bar,) = recording_tqdm.instances
    assert bar.total == 25 and bar.shown
    assert sorted(bar.updates) == [5, 10, 10]
    assert bar.final_n == 25
    assert "/25" in capsys.readouterr().err


async def test_progress_bar_async(
    scripted: ScriptedOpenAIServer, recording_tqdm: type[RecordingTqdm]
) -> None:
    client = make_client(scripted, batch_size=4, show_progress_bar=True)
    await client.aembed(texts_n(10))
    await client.aclose()
    (bar,) = recording_tqdm.instances
    assert sorted(bar.updates) == [2, 4, 4] and bar.final_n == 10


def test_progress_bar_off_by_default(
    scripted: ScriptedOpenAIServer, recording_tqdm: type[RecordingTqdm], capsys: Any
) -> None:
    with make_client(scripted, batch_size=10) as client:
        client.embed(texts_n(25))
    (bar,) = recording_tqdm.instances
    assert not bar.shown and sum(bar.updates) == 25
    assert capsys.readouterr().err == ""


def test_langchain_progress_bar_field(
    scripted: ScriptedOpenAIServer, recording_tqdm: type[RecordingTqdm]
) -> None:
    embed = PrivatemodeEmbeddings(
        base_url=scripted.base_url, model=scripted.model, batch_size=3, show_progress_bar=True
    )
    embed.embed_documents(texts_n(7))
    (bar,) = recording_tqdm.instances
    assert sorted(bar.updates) == [1, 3, 3] and bar.final_n == 7


# ---- empty and over-long inputs ---------------------------------------------------------


def test_empty_strings_are_embedded_in_place(scripted: ScriptedOpenAIServer) -> None:
    texts = ["first", "", "third", ""]
    with make_client(scripted) as client:
        vectors = client.embed(texts)
    np.testing.assert_array_equal(vectors, expected(texts))
    (seen,) = scripted.embedding_requests()
    assert seen.body["input"] == texts


def test_empty_list_sends_nothing(scripted: ScriptedOpenAIServer) -> None:
    with make_client(scripted) as client:
        assert client.embed([]).shape[0] == 0
    lc = PrivatemodeEmbeddings(base_url=scripted.base_url, model=scripted.model)
    assert lc.embed_documents([]) == []
    assert scripted.seen == []


def test_over_long_input_error_names_the_callers_index(scripted: ScriptedOpenAIServer) -> None:
    scripted.max_tokens_per_input = 5
    texts = texts_n(20)
    texts[13] = "word " * 50
    with make_client(scripted, batch_size=4, max_concurrency=1) as client:
        with pytest.raises(InputTooLongError) as info:
            client.embed(texts)
    # The server counted within the 4th request (its input[1]); the error names input 13.
    assert info.value.input_index == 13
    assert "input[13]" in str(info.value) and info.value.param == "input[13]"
    assert info.value.status_code == 400
    assert len(scripted.embedding_requests()) == 4  # not retried


def test_wrong_input_types_are_refused_before_sending(scripted: ScriptedOpenAIServer) -> None:
    with make_client(scripted) as client:
        with pytest.raises(TypeError, match="single string"):
            client.embed("not a list")
        with pytest.raises(TypeError, match="input 2 is a list"):
            client.embed(["a", "b", [1, 2, 3]])  # type: ignore[list-item]
    assert scripted.seen == []


def test_unknown_model_is_a_clear_404(scripted: ScriptedOpenAIServer) -> None:
    with EmbeddingsClient(base_url=scripted.base_url, model="no-such-model") as client:
        with pytest.raises(NotFoundError, match="no-such-model"):
            client.embed(["x"])


def test_dimensions_are_forwarded(scripted: ScriptedOpenAIServer) -> None:
    with make_client(scripted, dimensions=8) as client:
        vectors = client.embed(["a", "b"])
    assert vectors.shape == (2, 8)
    assert scripted.embedding_requests()[0].body["dimensions"] == 8


# ---- the API key --------------------------------------------------------------------------

SECRET = "sk-pm-0123456789-very-secret"


def test_api_key_is_sent_but_never_shown(
    scripted: ScriptedOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    scripted.script(Scripted(503, "busy"), Scripted(503, "busy"))
    lc = PrivatemodeEmbeddings(
        base_url=scripted.base_url, model=scripted.model, api_key=SECRET, batch_size=2
    )
    lc.embed_documents(texts_n(5))
    li = PrivatemodeEmbedding(base_url=scripted.base_url, model_name=scripted.model, api_key=SECRET)
    li.get_text_embedding_batch(texts_n(3))
    scripted.script(Scripted(400, "refused"))
    with pytest.raises(BadRequestError) as info:
        lc.embed_query("x")

    auth = {s.headers.get("authorization") for s in scripted.seen}
    assert auth == {f"Bearer {SECRET}"}
    shown = [
        repr(lc),
        str(lc),
        str(lc.model_dump()),
        lc.model_dump_json(),
        repr(li),
        str(li.to_dict()),
        li.to_json(),
        repr(lc.client),
        str(info.value),
        repr(info.value),
        *(r.getMessage() for r in caplog.records),
    ]
    assert any("retry" in s for s in shown)  # the retries were logged
    for text in shown:
        assert SECRET not in text
    assert "api_key" not in li.to_dict() and "api_key" not in lc.model_dump()


def test_api_key_from_environment(
    scripted: ScriptedOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRIVATEMODE_API_KEY", SECRET)
    monkeypatch.setenv("PRIVATEMODE_BASE_URL", scripted.base_url)
    lc = PrivatemodeEmbeddings(model=scripted.model)
    li = PrivatemodeEmbedding(model_name=scripted.model)
    lc.embed_query("q")
    li.get_query_embedding("q")
    assert [s.headers.get("authorization") for s in scripted.seen] == [f"Bearer {SECRET}"] * 2


def test_no_key_sends_no_authorization(scripted: ScriptedOpenAIServer) -> None:
    with make_client(scripted) as client:
        client.embed(["x"])
    assert "authorization" not in scripted.seen[0].headers


def test_settings_changed_after_construction_take_effect(scripted: ScriptedOpenAIServer) -> None:
    lc = PrivatemodeEmbeddings(base_url=scripted.base_url, model=scripted.model)
    lc.embed_documents(texts_n(4))
    lc.batch_size = 1
    lc.embed_documents(texts_n(4))
    sizes = [len(s.body["input"]) for s in scripted.embedding_requests()]
    assert sizes == [4, 1, 1, 1, 1]


def test_no_event_loop_conflict_when_sync_called_inside_a_loop(
    scripted: ScriptedOpenAIServer,
) -> None:
    # A sync call made from code already running an event loop (a notebook cell, an async app).
    async def inside() -> list[list[float]]:
        lc = PrivatemodeEmbeddings(
            base_url=scripted.base_url, model=scripted.model, batch_size=2, max_concurrency=2
        )
        return lc.embed_documents(texts_n(6))

    vectors = asyncio.run(inside())
    np.testing.assert_allclose(vectors, expected(texts_n(6)))


def test_one_object_across_several_event_loops(scripted: ScriptedOpenAIServer) -> None:
    # asyncio.run per call (scripts, notebooks): each loop gets its own pooled AsyncClient, and
    # the clients of closed loops are let go.
    lc = PrivatemodeEmbeddings(base_url=scripted.base_url, model=scripted.model)
    for _ in range(3):
        vectors = asyncio.run(lc.aembed_documents(["a", "b"]))
        np.testing.assert_allclose(vectors, expected(["a", "b"]))
    assert len(lc.client._loops) <= 1
