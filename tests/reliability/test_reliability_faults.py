"""Faults between the proxy and the backend, injected by a real relay on 127.0.0.1.

client --HTTP--> proxy --HTTP--> FaultRelay --HTTP--> local backend (real model, real crypto)

For every fault the proxy either recovers as the protocol says (§5: one new secret exchange after
`no secret for ID`, one retry with a new nonce after a connection reset) and the client gets every
vector, right and in order (checked against the engine's direct output), or the client gets a
clear OpenAI-shaped error and no vector at all. After every case the same proxy serves a normal
request correctly again, and every scripted fault must have fired.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from privatemode_proxy import BatchLimits
from privatemode_proxy._serving import ServerThread
from privatemode_proxy.local import LocalBackend
from privatemode_proxy.protocol import ClientSecretExchange, RequestCipher, secret_id_for
from reliability_relay import (
    Action,
    Exchange,
    FaultRelay,
    Response,
    Token,
    backend_down,
    flip_hex,
    forward,
    hold,
    no_secret_for_id,
    openai_error,
    replay,
    reset,
    respond,
    restart_backend,
    rewrite,
    stall,
    truncate,
)
from reliability_support import (
    ATTEST,
    EMBEDDINGS,
    MODEL,
    SECRET,
    TEXTS,
    Reference,
    embed,
    error_of,
    open_response,
    seal_response,
    start_proxy,
    vectors_of,
    wait_upstream,
)

SPLIT = BatchLimits(max_inputs_per_request=4)
"""12 texts -> 3 sub-requests, so faults also hit one part of a split request."""


@dataclass
class Rig:
    relay: FaultRelay
    proxy: ServerThread
    backend: LocalBackend

    @property
    def url(self) -> str:
        return self.proxy.url


@pytest.fixture(scope="module")
def rig_module(rel_backend: LocalBackend) -> Iterator[Rig]:
    relay = FaultRelay(rel_backend.url, backend=rel_backend).start()
    proxy = start_proxy(rel_backend, api_url=relay.url, limits=SPLIT)
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        yield Rig(relay, proxy, rel_backend)
    finally:
        proxy.stop()
        relay.stop()


@pytest.fixture()
def rig(rig_module: Rig, reference: Reference) -> Iterator[Rig]:
    """The shared rig with a clean relay; afterwards: every fault fired, and the proxy still
    answers a normal request with the right vectors (it keeps serving after any fault)."""
    rig_module.backend.start()  # a test may have stopped it
    # Another test may have made the backend forget the rig's secret: start from a known state.
    assert embed(rig_module.url, "warm").status_code == 200
    rig_module.relay.clear()
    yield rig_module
    pending = rig_module.relay.pending_rules()
    rig_module.relay.clear()
    rig_module.backend.start()
    assert rig_module.relay.action_errors == [], "a scripted relay action failed"
    assert pending == 0, "a scripted fault never fired"
    after = embed(rig_module.url, TEXTS)
    reference.check(TEXTS, vectors_of(after))


def _nonces(exchanges: list[Exchange]) -> list[str | None]:
    return [e.request_nonce for e in exchanges]


# =============================================================================================
# Faults the protocol recovers from: the client gets every vector, right and in order.
# =============================================================================================


def test_no_secret_for_id_is_answered_by_one_new_exchange_and_one_retry(
    rig: Rig, reference: Reference
) -> None:
    rig.relay.on(EMBEDDINGS, no_secret_for_id())
    resp = embed(rig.url, TEXTS[:3])
    reference.check(TEXTS[:3], vectors_of(resp))
    calls = rig.relay.to(EMBEDDINGS)
    assert [e.action for e in calls] == ["no_secret_for_id", "forward"]
    assert len(rig.relay.to(SECRET)) == 1  # exactly one new exchange
    assert calls[1].secret_id != calls[0].secret_id  # the retry uses the new secret
    assert calls[1].request_nonce != calls[0].request_nonce  # re-encrypted, new nonce
    assert not calls[0].forwarded


def test_backend_that_forgot_its_secrets(rig: Rig, reference: Reference) -> None:
    rig.backend.secret_store.clear()  # a real 500 `no secret for ID` from the backend itself
    resp = embed(rig.url, TEXTS[:4])  # one sub-request
    reference.check(TEXTS[:4], vectors_of(resp))
    calls = rig.relay.to(EMBEDDINGS)
    assert [c.backend_response.status for c in calls if c.backend_response] == [500, 200]
    assert b"no secret for ID" in (
        calls[0].backend_response.body if calls[0].backend_response else b""
    )
    assert len(rig.relay.to(SECRET)) == 1


def test_backend_restart_during_a_request(rig: Rig, reference: Reference) -> None:
    rig.relay.on(EMBEDDINGS, restart_backend())  # restarted, then the request reaches it
    resp = embed(rig.url, TEXTS[:2])
    reference.check(TEXTS[:2], vectors_of(resp))
    calls = rig.relay.to(EMBEDDINGS)
    assert [c.backend_response.status for c in calls if c.backend_response] == [500, 200]
    assert len(rig.relay.to(SECRET)) == 1


def test_secret_lost_while_an_exchange_is_in_flight(
    relay: FaultRelay, backend: LocalBackend, reference: Reference
) -> None:
    """The backend loses its secrets (a restart) while the proxy's background refresh is in
    flight: the backend stored the refreshed secret before the loss, the proxy receives it after.
    A request that meets `no secret for ID` must then be retried with a secret exchanged after
    the failure (protocol §5: "force a new secret exchange"), not with the in-flight one, which
    the backend has already forgotten."""
    release = threading.Event()
    relay.on(SECRET, forward, name="first_exchange")
    relay.on(SECRET, hold(release), name="refresh_held")
    # The refresh starts 0.5 s after the first exchange (3 s use, 2.5 s refresh ahead).
    proxy = start_proxy(
        backend,
        api_url=relay.url,
        session_options={"secret_use_seconds": 3.0, "secret_refresh_ahead_seconds": 2.5},
    )
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        _wait_for(lambda: len(relay.to(SECRET)) == 2 and relay.to(SECRET)[1].forwarded)
        backend.secret_store.clear()  # the backend restarts: the old and the refreshed secret
        result: dict[str, Any] = {}
        client = threading.Thread(target=lambda: result.update(resp=embed(proxy.url, TEXTS[:3])))
        client.start()
        _wait_for(
            lambda: any(e.response and e.response.status == 500 for e in relay.to(EMBEDDINGS))
        )
        time.sleep(0.2)  # the proxy is now waiting for the in-flight exchange
        release.set()
        client.join(30)
        resp = result["resp"]
        held = orjson.loads(relay.to(SECRET)[1].body)["PublicKey"]
        in_flight_id = secret_id_for(base64.b64decode(held))
        retry = relay.to(EMBEDDINGS)[-1]
        assert retry.secret_id != in_flight_id, (
            "the retry used the secret of the exchange that began before the failure"
        )
        assert resp.status_code == 200, resp.text
        reference.check(TEXTS[:3], vectors_of(resp))
    finally:
        release.set()
        proxy.stop()


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def test_backend_restart_between_requests(rig: Rig, reference: Reference) -> None:
    rig.backend.stop()
    rig.backend.start()  # same port, every secret gone
    resp = embed(rig.url, TEXTS)  # all three sub-requests meet the forgetful backend
    reference.check(TEXTS, vectors_of(resp))
    assert len(rig.relay.to(SECRET)) == 1  # one exchange serves the three sub-requests


@pytest.mark.parametrize("after_backend", [False, True], ids=["before-backend", "after-backend"])
def test_connection_reset_is_retried_once_with_a_new_nonce(
    rig: Rig, reference: Reference, after_backend: bool
) -> None:
    rig.relay.on(EMBEDDINGS, reset(after_backend=after_backend))
    resp = embed(rig.url, TEXTS[:3])
    reference.check(TEXTS[:3], vectors_of(resp))
    calls = rig.relay.to(EMBEDDINGS)
    assert len(calls) == 2
    assert calls[0].secret_id == calls[1].secret_id  # same secret
    assert calls[0].request_nonce != calls[1].request_nonce  # re-encrypted
    assert calls[0].forwarded is after_backend
    assert rig.relay.to(SECRET) == []


def test_body_cut_on_the_wire_is_retried_like_a_reset(rig: Rig, reference: Reference) -> None:
    rig.relay.on(EMBEDDINGS, truncate(0.5, close=True))
    resp = embed(rig.url, TEXTS[:3])
    reference.check(TEXTS[:3], vectors_of(resp))
    assert len(rig.relay.to(EMBEDDINGS)) == 2


@pytest.mark.parametrize(
    "make_fault",
    [no_secret_for_id, reset, lambda: truncate(0.3, close=True)],
    ids=["no-secret", "reset", "cut-body"],
)
def test_fault_on_one_sub_request_of_a_split_request(
    rig: Rig, reference: Reference, make_fault: Callable[[], Action]
) -> None:
    rig.relay.on(EMBEDDINGS, make_fault())
    resp = embed(rig.url, TEXTS)  # 3 sub-requests; the first to arrive meets the fault
    reference.check(TEXTS, vectors_of(resp))
    assert len(rig.relay.to(EMBEDDINGS)) == 4


def _oracle(
    change: Callable[[dict[str, Any]], None],
    *,
    token_nonce: Callable[[bytes], bytes] | None = None,
    aad_nonce: Callable[[bytes], bytes] | None = None,
    sequence: Callable[[int], int] = lambda seq: seq,
    name: str,
) -> Action:
    """A backend that holds the secret but answers wrongly: decrypt the real answer with the
    backend's own copy of the secret, change it, encrypt it again (optionally under another nonce
    or with wrong sequence numbers)."""

    async def action(relay: FaultRelay, exchange: Exchange) -> None:
        answer = await relay.call_backend(exchange)
        sid = exchange.secret_id
        assert sid is not None and answer.status == 200, answer.status
        key = relay.backend.secret_store.get(sid)
        assert key is not None
        nonce = bytes.fromhex(exchange.request_nonce or "")
        obj = open_response(answer.body, key, nonce)
        change(obj)
        sealed_with = aad_nonce(nonce) if aad_nonce else nonce
        shown = token_nonce(nonce) if token_nonce else nonce
        body = seal_response(obj, key, sid, sealed_with, token_nonce=shown, sequence=sequence)
        exchange.response = Response(200, body, answer.headers)

    action.__name__ = name
    return action


def test_answer_with_rows_in_another_order_but_right_indices_is_put_in_order(
    rig: Rig, reference: Reference
) -> None:
    rig.relay.on(EMBEDDINGS, _oracle(lambda obj: obj["data"].reverse(), name="reversed_rows"))
    resp = embed(rig.url, TEXTS[:4])
    reference.check(TEXTS[:4], vectors_of(resp))


# =============================================================================================
# Faults that must fail the request with a clear error and no vector.
# =============================================================================================


def _flip(part: str, field: str = "data") -> Action:
    def change(_exchange: Exchange, answer: Response) -> Response:
        obj = orjson.loads(answer.body)
        token = Token.parse(obj[field])
        if part == "secret_id":
            token.secret_id = ("B" if token.secret_id[0] == "A" else "A") + token.secret_id[1:]
        elif part == "tag":
            token.ciphertext = flip_hex(token.ciphertext, len(token.ciphertext) - 1)
        else:
            setattr(token, part, flip_hex(getattr(token, part), 5))
        obj[field] = str(token)
        return Response(answer.status, orjson.dumps(obj), answer.headers)

    return rewrite(change, f"flip_{field}_{part}")


def _cut_ciphertext(_exchange: Exchange, answer: Response) -> Response:
    obj = orjson.loads(answer.body)
    token = Token.parse(obj["data"])
    token.ciphertext = token.ciphertext[: len(token.ciphertext) // 2]
    obj["data"] = str(token)
    return Response(answer.status, orjson.dumps(obj), answer.headers)


def _drop_field(_exchange: Exchange, answer: Response) -> Response:
    obj = orjson.loads(answer.body)
    del obj["model"]  # shifts the sequence numbers of the fields after it
    return Response(answer.status, orjson.dumps(obj), answer.headers)


def _foreign_key(_exchange: Exchange, answer: Response) -> Response:
    """An attacker without the secret: its own vectors, sealed under a random key, labelled with
    the proxy's secret ID and nonce."""
    obj = orjson.loads(answer.body)
    token = Token.parse(obj["data"])
    fake = {
        "object": "list",
        "model": MODEL,
        "data": [{"object": "embedding", "index": i, "embedding": [0.5] * 384} for i in range(4)],
        "id": obj.get("id"),
        "usage": obj.get("usage"),
    }
    body = seal_response(fake, os.urandom(32), token.secret_id, bytes.fromhex(token.nonce))
    return Response(200, body, answer.headers)


async def _genuine_answer_under_another_secret(relay: FaultRelay, exchange: Exchange) -> None:
    """An attacker with a secret of its own (a real exchange with the backend) answers with the
    backend's genuine, correctly encrypted answer to the attacker's own request."""
    await relay.call_backend(exchange)
    own = ClientSecretExchange()
    resp = await relay.backend_post(SECRET, own.request_body())
    secret = own.complete(resp.content, relay.backend.identity.mesh_ca)
    cipher = RequestCipher(secret.key, secret.id)
    body = cipher.encrypt_request(orjson.dumps({"model": MODEL, "input": TEXTS[6:10]}))
    answer = await relay.backend_post(
        EMBEDDINGS, body, {"privatemode-secret-id": secret.id, "privatemode-target-model": MODEL}
    )
    assert answer.status_code == 200
    exchange.response = Response(200, answer.content, [("content-type", "application/json")])


def _other_nonce(nonce: bytes) -> bytes:
    return bytes(b ^ 0x5A for b in nonce)


def _duplicate_row(obj: dict[str, Any]) -> None:
    obj["data"][-1] = dict(obj["data"][0])  # index 0 twice, the last index missing


def _wrong_length(obj: dict[str, Any]) -> None:
    row = base64.b64decode(obj["data"][1]["embedding"])
    obj["data"][1]["embedding"] = base64.b64encode(row[:-4]).decode()


def _extra_row(obj: dict[str, Any]) -> None:
    obj["data"].append({**obj["data"][0], "index": len(obj["data"])})


@dataclass(frozen=True)
class Refusal:
    """A fault, and what the client must get instead of vectors."""

    make: Callable[[], Action]
    status: int
    message: str
    forwarded: bool = True  # whether the request reached the backend
    times: int = 1  # how many requests in a row meet the fault
    error_type: str = "upstream_error"
    """`upstream_error`: the proxy refused the answer; else the upstream's error passed through."""


REFUSALS: dict[str, Refusal] = {
    # encrypted fields altered on the way back
    "flip-data-ciphertext": Refusal(lambda: _flip("ciphertext"), 502, "failed decryption"),
    "flip-data-tag": Refusal(lambda: _flip("tag"), 502, "failed decryption"),
    "flip-data-iv": Refusal(lambda: _flip("iv"), 502, "failed decryption"),
    "flip-data-nonce": Refusal(lambda: _flip("nonce"), 502, "another request's nonce"),
    "flip-data-secret-id": Refusal(lambda: _flip("secret_id"), 502, "secret ID"),
    "flip-model-ciphertext": Refusal(
        lambda: _flip("ciphertext", "model"), 502, "failed decryption"
    ),
    "flip-object-tag": Refusal(lambda: _flip("tag", "object"), 502, "failed decryption"),
    "cut-ciphertext": Refusal(
        lambda: rewrite(_cut_ciphertext, "cut_ciphertext"), 502, "failed decryption"
    ),
    "drop-encrypted-field": Refusal(
        lambda: rewrite(_drop_field, "drop_field"), 502, "failed decryption"
    ),
    "body-cut-framed": Refusal(lambda: truncate(0.6, close=False), 502, "failed decryption"),
    # answers that are not this request's
    "foreign-key-same-labels": Refusal(
        lambda: rewrite(_foreign_key, "foreign_key"), 502, "failed decryption"
    ),
    "genuine-answer-other-secret": Refusal(
        lambda: _named(_genuine_answer_under_another_secret, "other_secret"), 502, "secret ID"
    ),
    "right-key-other-nonce": Refusal(
        lambda: _oracle(
            lambda obj: None, token_nonce=_other_nonce, aad_nonce=_other_nonce, name="other_nonce"
        ),
        502,
        "another request's nonce",
    ),
    "right-key-nonce-label-kept-aad-other": Refusal(
        lambda: _oracle(lambda obj: None, aad_nonce=_other_nonce, name="aad_other_nonce"),
        502,
        "failed decryption",
    ),
    "right-key-sequence-shifted": Refusal(
        lambda: _oracle(
            lambda obj: None, sequence=lambda seq: (seq + 1) % 3, name="sequence_shifted"
        ),
        502,
        "failed decryption",
    ),
    # a key holder (buggy backend) answering the wrong number of vectors
    "row-dropped": Refusal(
        lambda: _oracle(lambda obj: obj["data"].pop(), name="row_dropped"), 502, "unusable"
    ),
    "row-duplicated": Refusal(
        lambda: _oracle(_duplicate_row, name="row_duplicated"), 502, "repeated"
    ),
    "row-added": Refusal(lambda: _oracle(_extra_row, name="row_added"), 502, "unusable"),
    "row-wrong-length": Refusal(
        lambda: _oracle(_wrong_length, name="row_wrong_length"), 502, "unusable"
    ),
    # protocol errors that are not retried, or retried once only
    # Upstream error answers pass through with their status (protocol §5), after the one retry.
    "no-secret-twice": Refusal(
        no_secret_for_id,
        500,
        "no secret for ID",
        forwarded=False,
        times=2,
        error_type="server_error",
    ),
    "reset-twice": Refusal(reset, 502, "failed twice", forwarded=False, times=2),
    "plain-500": Refusal(
        lambda: respond(500, openai_error("worker crashed")),
        500,
        "worker crashed",
        forwarded=False,
        error_type="server_error",
    ),
    "backend-down": Refusal(
        backend_down, 502, "connection refused", forwarded=False, error_type="server_error"
    ),
}


def _named(action: Action, name: str) -> Action:
    action.__name__ = name
    return action


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_fault_fails_the_request_clearly_with_no_vector(rig: Rig, case: str) -> None:
    spec = REFUSALS[case]
    rig.relay.on(EMBEDDINGS, spec.make(), times=spec.times)
    texts = TEXTS[:4]
    resp = embed(rig.url, texts, encoding_format="base64")
    assert resp.status_code == spec.status, resp.text
    error = error_of(resp)
    assert spec.message in error["message"], error
    assert error["type"] == spec.error_type
    calls = rig.relay.to(EMBEDDINGS)
    assert len(calls) == spec.times, [c.action for c in calls]  # retried only where §5 says
    assert calls[0].forwarded is spec.forwarded


def test_fault_on_one_sub_request_fails_the_whole_request(rig: Rig) -> None:
    rig.relay.on(EMBEDDINGS, _flip("ciphertext"))
    resp = embed(rig.url, TEXTS)  # three sub-requests; one answer is tampered with
    assert resp.status_code == 502
    error = error_of(resp)
    assert "failed decryption" in error["message"]
    assert "sub-request" in error["message"]  # says which part failed


def test_replayed_earlier_answer_is_refused(rig: Rig, reference: Reference) -> None:
    first = embed(rig.url, TEXTS[:4], encoding_format="base64")
    reference.check(TEXTS[:4], vectors_of(first))
    earlier = rig.relay.to(EMBEDDINGS)[0]
    rig.relay.on(EMBEDDINGS, replay(lambda: earlier))
    # The same texts again: the replayed answer even holds the right vectors, and must still be
    # refused (it belongs to another request nonce).
    resp = embed(rig.url, TEXTS[:4], encoding_format="base64")
    assert resp.status_code == 502
    assert "another request's nonce" in error_of(resp)["message"]


def test_plaintext_answer_marked_unencrypted_is_not_taken_as_vectors(rig: Rig) -> None:
    """Protocol §3 lets `Privatemode-Encrypted: false` pass a response through; for a success
    answer that would let anyone on the path (or outside the TEE) choose the vectors. The
    proxy must not hand out vectors that were not encrypted by the attested backend."""

    def plaintext(_exchange: Exchange, answer: Response) -> Response:
        fake = {
            "object": "list",
            "model": MODEL,
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.5] * 384} for i in range(4)
            ],
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
        return Response(
            200,
            orjson.dumps(fake),
            [("content-type", "application/json"), ("privatemode-encrypted", "false")],
        )

    rig.relay.on(EMBEDDINGS, rewrite(plaintext, "unencrypted_vectors"))
    resp = embed(rig.url, TEXTS[:4])
    assert resp.status_code == 502, (
        "the proxy returned vectors from an unencrypted upstream answer: "
        f"{resp.status_code} {resp.text[:120]}"
    )
    error_of(resp)


def test_rate_limit_is_passed_on_with_retry_after(rig: Rig) -> None:
    rig.relay.on(
        EMBEDDINGS,
        respond(
            429,
            openai_error("rate limit reached", type_="rate_limit_error", code="rate_limit"),
            {"retry-after": "7", "privatemode-encrypted": "false"},
        ),
    )
    resp = embed(rig.url, TEXTS[:2])
    assert resp.status_code == 429
    assert resp.headers.get("retry-after") == "7"
    assert "rate limit" in error_of(resp)["message"]


# =============================================================================================
# Stalls: a timeout, not a hang (a proxy of its own with a short upstream timeout).
# =============================================================================================

STALL_TIMEOUT = 4.0


@pytest.mark.parametrize("partial", [False, True], ids=["no-answer", "mid-body"])
def test_stalled_backend_gives_a_timeout_not_a_hang(
    relay: FaultRelay, backend: LocalBackend, reference: Reference, partial: bool
) -> None:
    proxy = start_proxy(
        backend, api_url=relay.url, session_options={"timeout_seconds": STALL_TIMEOUT}
    )
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        relay.on(EMBEDDINGS, stall(60.0, partial=partial))
        resp = embed(proxy.url, TEXTS[:3], timeout=STALL_TIMEOUT * 5)
        assert resp.status_code == 504, resp.text
        error = error_of(resp)
        assert error["code"] == "upstream_timeout"
        assert "did not answer in time" in error["message"]
        assert len(relay.to(EMBEDDINGS)) == 1  # a timeout is not retried
        after = embed(proxy.url, TEXTS[:3])  # and the proxy still serves
        reference.check(TEXTS[:3], vectors_of(after))
    finally:
        proxy.stop()


# =============================================================================================
# Faults during attestation and secret exchange (at proxy start).
# =============================================================================================


@dataclass(frozen=True)
class StartupFault:
    path: str
    make: Callable[[], Action]
    times: int | None
    ready: bool
    message: str = ""
    status: int = 503
    """What the app gets when the proxy could not become ready."""
    api_key: str | None = None


STARTUP_FAULTS: dict[str, StartupFault] = {
    "secret-500-once": StartupFault(SECRET, lambda: respond(500, openai_error("busy")), 1, True),
    "secret-reset-once": StartupFault(SECRET, reset, 1, True),
    "secret-stalled-once": StartupFault(SECRET, lambda: stall(30.0), 1, True),
    "attest-503-twice": StartupFault(ATTEST, lambda: respond(503, openai_error("busy")), 2, True),
    "attest-reset-once": StartupFault(ATTEST, reset, 1, True),
    "secret-500-always": StartupFault(
        SECRET, lambda: respond(500, openai_error("busy")), None, False, "after 3 attempts"
    ),
    # The proxy's --apiKey refused: the app gets the service's 401 and message, not a 503.
    "attest-401": StartupFault(
        ATTEST,
        lambda: respond(401, openai_error("bad key", type_="authentication_error")),
        None,
        False,
        "bad key",
        status=401,
        api_key="pm-refused-key",
    ),
    "attest-garbage": StartupFault(
        ATTEST, lambda: respond(200, b"<html>captive portal</html>"), None, False, "AttestationDoc"
    ),
}


@pytest.mark.parametrize("case", list(STARTUP_FAULTS), ids=list(STARTUP_FAULTS))
def test_fault_during_attestation_or_exchange(
    relay: FaultRelay, backend: LocalBackend, reference: Reference, case: str
) -> None:
    spec = STARTUP_FAULTS[case]
    relay.on(spec.path, spec.make(), times=spec.times)
    before = backend.request_log.count(EMBEDDINGS)
    proxy = start_proxy(
        backend,
        api_url=relay.url,
        api_key=spec.api_key,
        session_options={"timeout_seconds": STALL_TIMEOUT},
    )
    try:
        health = wait_upstream(proxy.url, timeout=60)
        if spec.ready:
            assert health["upstream"] == "ready", health
            resp = embed(proxy.url, TEXTS[:3])
            reference.check(TEXTS[:3], vectors_of(resp))
            assert relay.pending_rules() == 0
        else:
            assert health["upstream"] == "failed", health
            resp = embed(proxy.url, TEXTS[:3])
            assert resp.status_code == spec.status, resp.text
            error = error_of(resp)
            assert spec.message in error["message"], error
            assert relay.to(EMBEDDINGS) == []
            assert backend.request_log.count(EMBEDDINGS) == before
    finally:
        proxy.stop()


def test_direct_backend_down_then_back(backend: LocalBackend, reference: Reference) -> None:
    """No relay: the proxy talks to the backend's port, which goes away and comes back."""
    proxy = start_proxy(backend, api_url=backend.url)
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        backend.stop()
        resp = embed(proxy.url, TEXTS[:2])
        assert resp.status_code == 502
        assert "could not reach" in error_of(resp)["message"]
        backend.start()  # same port, no secrets
        resp = embed(proxy.url, TEXTS[:2])
        reference.check(TEXTS[:2], vectors_of(resp))
    finally:
        proxy.stop()


def test_the_oracle_and_the_reference_check_are_honest(rig: Rig, reference: Reference) -> None:
    """An untouched answer decrypted and encrypted again by the oracle gives the same vectors
    (so the oracle's refusals above come from the change, not the oracle), and the reference
    check catches a swap."""
    rig.relay.on(EMBEDDINGS, _oracle(lambda obj: None, name="identity"))
    resp = embed(rig.url, TEXTS[:4])
    vectors = vectors_of(resp)
    reference.check(TEXTS[:4], vectors)
    with pytest.raises(AssertionError):
        reference.check(TEXTS[:4], vectors[[1, 0, 2, 3]])
    with pytest.raises(AssertionError):
        reference.check(TEXTS[:4], vectors[[0, 0, 2, 3]])
