"""`/v1/models` is what the upstream serves (passed through, with its `tasks`); the catalogue only
fills missing fields; `GET /v1/models/{id}` answers one entry. Inference headers carry
`Privatemode-User-Request-ID: proxy_<UUIDv7>_<attempt>`.

The fault relay stands in for a service whose list has fields ours lacks and lacks `tasks`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
from privatemode_proxy._serving import ServerThread
from privatemode_proxy.local import LocalBackend
from reliability_relay import Exchange, FaultRelay, Response, no_secret_for_id, rewrite
from reliability_support import EMBEDDINGS, MODEL, TEXTS, embed, start_proxy, wait_upstream

MODELS = "/v1/models"


@pytest.fixture()
def proxy(backend: LocalBackend, relay: FaultRelay) -> Iterator[ServerThread]:
    server = start_proxy(backend, api_url=relay.url)
    assert wait_upstream(server.url)["upstream"] == "ready"
    yield server
    server.stop()


def test_models_are_upstreams_list(proxy: ServerThread, relay: FaultRelay) -> None:
    resp = httpx.get(proxy.url + MODELS)
    assert resp.status_code == 200
    (exchange,) = relay.to(MODELS)
    assert exchange.response is not None
    # Exactly upstream's list: nothing added that upstream does not serve (no qwen3 here).
    assert resp.json() == orjson.loads(exchange.response.body)
    assert [m["id"] for m in resp.json()["data"]] == [MODEL]
    assert resp.json()["data"][0]["tasks"] == ["embed"]


def _service_like(_exchange: Exchange, answer: Response) -> Response:
    body = orjson.loads(answer.body)
    for entry in body["data"]:
        del entry["tasks"], entry["owned_by"]
        entry["max_model_len"] = 256
    body["data"].append({"id": "chat-model", "object": "model", "tasks": ["generate"]})
    return Response(answer.status, orjson.dumps(body), answer.headers)


def test_catalogue_fills_only_missing_fields(proxy: ServerThread, relay: FaultRelay) -> None:
    relay.on(MODELS, rewrite(_service_like, "service_like"), times=None)
    entries = {m["id"]: m for m in httpx.get(proxy.url + MODELS).json()["data"]}
    assert entries[MODEL]["tasks"] == ["embed"]  # filled from the catalogue
    assert entries[MODEL]["owned_by"] == "privatemode-local"
    assert entries[MODEL]["max_model_len"] == 256  # upstream's own field kept
    assert entries["chat-model"] == {"id": "chat-model", "object": "model", "tasks": ["generate"]}

    one = httpx.get(proxy.url + MODELS + "/" + MODEL)
    assert one.status_code == 200 and one.json() == entries[MODEL]
    assert httpx.get(proxy.url + MODELS + "/chat-model").json()["tasks"] == ["generate"]
    missing = httpx.get(proxy.url + MODELS + "/multilingual-e5-large")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"


def test_user_request_id_is_a_uuid7_per_request_with_the_attempt(
    proxy: ServerThread, relay: FaultRelay
) -> None:
    assert embed(proxy.url, TEXTS[:1]).status_code == 200
    relay.on(EMBEDDINGS, no_secret_for_id())  # one protocol retry: attempt 1
    assert embed(proxy.url, TEXTS[:1]).status_code == 200
    ids = [e.headers["privatemode-user-request-id"] for e in relay.to(EMBEDDINGS)]
    assert len(ids) == 3
    pattern = re.compile(r"^proxy_([0-9a-f-]{36})_(\d+)$")
    parsed = [pattern.match(i) for i in ids]
    assert all(parsed), ids
    uuids = [uuid.UUID(m.group(1)) for m in parsed if m]
    assert all(u.version == 7 for u in uuids)
    assert [m.group(2) for m in parsed if m] == ["0", "0", "1"]
    assert uuids[1] == uuids[2] != uuids[0]  # one id per request, the attempt counts up
    assert all("x-request-id" not in e.headers for e in relay.to(EMBEDDINGS))
    assert {e.headers["privatemode-version"] for e in relay.to(EMBEDDINGS)} == {"v1.40.0"}
