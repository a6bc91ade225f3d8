"""The answer keeps upstream's fields: `id`, `object`, `created`, `model`, `data`, `usage` (with
`prompt_tokens_details`); a split request gets the first sub-request's `id` and `created` and
the sum of every `usage`.

The fault relay between proxy and the real local backend reads each sub-request's plaintext
`id` and `usage` (they are not encrypted, protocol §3) and adds the `prompt_tokens_details`
the real service reports and the local backend does not.
"""

from __future__ import annotations

import time

import httpx
import orjson
from privatemode_proxy import BatchLimits
from privatemode_proxy.local import LocalBackend
from reliability_relay import Exchange, FaultRelay, Response, rewrite
from reliability_support import EMBEDDINGS, MODEL, TEXTS, start_proxy, vectors_of, wait_upstream


def _with_cached_tokens(exchange: Exchange, answer: Response) -> Response:
    body = orjson.loads(answer.body)
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 2, "note": "kept"}
    return Response(answer.status, orjson.dumps(body), answer.headers)


def test_split_answer_has_one_id_first_created_and_summed_usage(
    backend: LocalBackend, relay: FaultRelay
) -> None:
    proxy = start_proxy(
        backend,
        api_url=relay.url,
        # 10 inputs, 3 per sub-request, one at a time: the relay sees them in input order.
        limits=BatchLimits(max_inputs_per_request=3, max_concurrent_subrequests=1),
    )
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        relay.on(EMBEDDINGS, rewrite(_with_cached_tokens, "cached_tokens"), times=None)
        started = int(time.time())
        resp = httpx.post(
            proxy.url + EMBEDDINGS, json={"model": MODEL, "input": TEXTS[:10]}, timeout=60
        )
        body = resp.json()
        assert vectors_of(resp).shape == (10, 384)
        sent = relay.to(EMBEDDINGS)
        assert len(sent) == 4
        answers = [orjson.loads(e.response.body) for e in sent if e.response is not None]
        assert len(answers) == 4
        assert list(body) == ["id", "object", "created", "model", "data", "usage"]
        assert body["id"] == answers[0]["id"] and body["id"].startswith("embd-")
        assert len({a["id"] for a in answers}) == 4  # one of four distinct ids: the first
        assert isinstance(body["created"], int) and started - 1 <= body["created"] <= time.time()
        assert body["object"] == "list" and body["model"] == MODEL
        prompt = sum(a["usage"]["prompt_tokens"] for a in answers)
        assert prompt == sum(backend.engine.count_tokens(TEXTS[:10]))
        assert body["usage"] == {
            "prompt_tokens": prompt,
            "total_tokens": sum(a["usage"]["total_tokens"] for a in answers),
            "prompt_tokens_details": {"cached_tokens": 8, "note": "kept"},
        }
    finally:
        proxy.stop()


def test_unsplit_answer_keeps_the_upstream_id(backend: LocalBackend, relay: FaultRelay) -> None:
    proxy = start_proxy(backend, api_url=relay.url)
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        resp = httpx.post(
            proxy.url + EMBEDDINGS, json={"model": MODEL, "input": TEXTS[:2]}, timeout=60
        )
        assert resp.status_code == 200
        (exchange,) = relay.to(EMBEDDINGS)
        assert exchange.response is not None
        upstream = orjson.loads(exchange.response.body)
        assert resp.json()["id"] == upstream["id"]
        assert resp.json()["usage"] == upstream["usage"]
    finally:
        proxy.stop()
