"""Issue 13: what a real machine throws at the proxy — huge inputs, crowds, slow and vanished
clients — each probe as a test that failed before the fix. Timings are in bench/bench_hardening.py;
these tests check behaviour only (statuses, what reached the backend, what was read).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from privatemode_proxy import BatchLimits, ProxyConfig, SessionConfig, create_proxy_app
from privatemode_proxy import pinned_manifest as pin
from privatemode_proxy._admission import AdmissionLimits
from privatemode_proxy._batching import MAX_BYTES_PER_TOKEN
from privatemode_proxy._serving import ConnectionLimits, ServerThread
from privatemode_proxy.attestation import load_trusted_root
from privatemode_proxy.local import LocalBackend
from privatemode_proxy.local._app import BackendLimits
from reliability_relay import FaultRelay, respond, stall
from reliability_support import MODEL, embed, error_of, wait_upstream

EMBEDDINGS = "/v1/embeddings"


def _proxy(
    backend: LocalBackend,
    api_url: str | None = None,
    *,
    counter: Any = None,
    connection_limits: ConnectionLimits | None = None,
    session_options: dict[str, Any] | None = None,
    **config: Any,
) -> ServerThread:
    options: dict[str, Any] = {"timeout_seconds": 30.0, "exchange_retry_delay_seconds": 0.05}
    options.update(session_options or {})
    session = SessionConfig(
        api_url=api_url or backend.url,
        trusted_roots=tuple(load_trusted_root(Path(backend.root_pem_path))),
        manifest=pin(Path(backend.manifest_path).read_bytes()),
        **options,
    )
    proxy_config = ProxyConfig(
        session=session,
        local_mode=True,
        token_counters={backend.model_id: counter or backend.engine.count_tokens},
        **config,
    )
    server = ServerThread(create_proxy_app(proxy_config), connection_limits=connection_limits)
    server.start()
    return server


@pytest.fixture()
def proxies() -> Iterator[list[ServerThread]]:
    started: list[ServerThread] = []
    yield started
    for server in started:
        server.stop()


class RecordingCounter:
    """The backend's real token counter, recording the longest text and the threads it ran on."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.longest = 0
        self.threads: set[str] = set()

    def __call__(self, texts: Sequence[str]) -> list[int]:
        self.longest = max([self.longest, *map(len, texts)])
        self.threads.add(threading.current_thread().name)
        return list(self.real(texts))


# -- #3: one oversized input ---------------------------------------------------------------------


def test_an_oversized_input_is_refused_without_being_tokenized(
    rel_backend: LocalBackend, proxies: list[ServerThread]
) -> None:
    counter = RecordingCounter(rel_backend.engine.count_tokens)
    proxy = _proxy(rel_backend, counter=counter)
    proxies.append(proxy)
    wait_upstream(proxy.url)
    bound = 256 * MAX_BYTES_PER_TOKEN
    huge = "word " * (2 * 1024 * 1024 // 5)  # 2 MiB; the probe used 20 MiB
    resp = embed(proxy.url, ["fine", huge])
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["code"] == "context_length_exceeded"
    assert "input 1" in err["message"] and "bytes" in err["message"]
    assert counter.longest <= bound  # the tokenizer never saw it
    # Long but legal inputs are counted, off the event loop (the server's thread).
    texts = ["a sentence of several words. " * 40] * 5  # 242 tokens each, 5.8 kB in all
    assert embed(proxy.url, texts).status_code == 200
    assert counter.longest > 0
    assert f"uvicorn-{proxy.port}" not in counter.threads


# -- #4: inputs per request ----------------------------------------------------------------------


def test_too_many_inputs_get_a_clear_400(
    rel_backend: LocalBackend, proxies: list[ServerThread]
) -> None:
    proxy = _proxy(rel_backend, max_client_inputs=50)
    proxies.append(proxy)
    wait_upstream(proxy.url)
    assert embed(proxy.url, ["x"] * 50).status_code == 200
    resp = embed(proxy.url, ["x"] * 51)
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["code"] == "too_many_inputs" and err["param"] == "input"
    assert "51" in err["message"] and "50" in err["message"]
    assert "--maxClientInputs" in err["message"]


# -- #5: chunked bodies counted while read ---------------------------------------------------------


def _send_until_answered(
    url: str, head: bytes, total: int, chunk: int = 64 * 1024
) -> tuple[bytes, int]:
    """Send a chunked body of up to `total` bytes, whole frames only, while the server takes
    them; stop when it answers. Returns the answer's first bytes and how much body was sent."""
    import select

    host, port = url.removeprefix("http://").split(":")
    sent = 0
    frame = f"{chunk:x}\r\n".encode() + b"a" * chunk + b"\r\n"
    answer = b""
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head)
        try:
            while sent < total:
                readable, writable, _ = select.select([sock], [sock], [], 0.05)
                if readable:
                    break
                if writable:
                    sock.sendall(frame)
                    sent += chunk
            while b"\r\n" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        except OSError:
            pass
    return answer, sent


def test_a_chunked_body_is_refused_once_past_the_limit(
    rel_backend: LocalBackend, proxies: list[ServerThread]
) -> None:
    limit = 256 * 1024
    proxy = _proxy(rel_backend, admission=AdmissionLimits(max_body_bytes=limit))
    proxies.append(proxy)
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    total = 256 * 1024 * 1024
    answer, sent = _send_until_answered(proxy.url, head, total)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < total // 4  # refused while reading, long before the end


# -- #6: a client that goes away -------------------------------------------------------------


def test_a_client_that_goes_away_cancels_the_outstanding_sub_requests(
    rel_backend: LocalBackend, proxies: list[ServerThread]
) -> None:
    proxy = _proxy(
        rel_backend,
        limits=BatchLimits(max_inputs_per_request=4, max_concurrent_subrequests=1),
    )
    proxies.append(proxy)
    wait_upstream(proxy.url)
    log = rel_backend.request_log
    before = log.count(EMBEDDINGS)
    texts = [f"text {i} for a client that leaves" for i in range(400)]  # 100 sub-requests
    body = httpx.Request("POST", proxy.url + EMBEDDINGS, json={"model": MODEL, "input": texts})
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = (
            f"POST /v1/embeddings HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body.content)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body.content)
        deadline = time.monotonic() + 60
        while log.count(EMBEDDINGS) - before < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    # The client is gone; the backend sees no new sub-request once the proxy noticed.
    settled = log.count(EMBEDDINGS)
    for _ in range(100):
        time.sleep(0.1)
        now = log.count(EMBEDDINGS)
        if now == settled:
            break
        settled = now
    time.sleep(1.0)
    sent = log.count(EMBEDDINGS) - before
    assert 3 <= sent < 20, f"{sent} of 100 sub-requests were sent for a client that left"


# -- #7: admission control -------------------------------------------------------------------------


def _half_sent(url: str, content_length: int = 1000) -> socket.socket:
    """A connection with a complete request head and the start of its body (admitted, reading)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        (
            f"POST /v1/embeddings HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
            '{"model": "'
        ).encode()
    )
    return sock


def _admission_of(proxy: ServerThread) -> Any:
    return proxy._server.config.app.state.admission


def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)


def test_a_full_proxy_answers_503_with_retry_after_and_stays_healthy(
    rel_backend: LocalBackend, proxies: list[ServerThread]
) -> None:
    proxy = _proxy(
        rel_backend,
        admission=AdmissionLimits(max_active=1, max_queued=1, max_wait_seconds=120),
    )
    proxies.append(proxy)
    wait_upstream(proxy.url)
    admission = _admission_of(proxy)
    first = _half_sent(proxy.url)  # admitted, its body still coming
    _wait_for(lambda: admission.in_progress == 1)
    queued_answer: dict[str, httpx.Response] = {}
    waiter = threading.Thread(
        target=lambda: queued_answer.setdefault("r", embed(proxy.url, "queued", timeout=120))
    )
    waiter.start()
    _wait_for(lambda: admission.waiting == 1)
    refused = embed(proxy.url, "one too many")
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    err = error_of(refused)
    assert err["code"] == "overloaded" and "retry after" in err["message"]
    health = httpx.get(proxy.url + "/healthz", timeout=10).json()
    assert health["status"] == "ok"
    assert health["requests_in_progress"] == 1 and health["requests_waiting"] == 1
    first.close()  # the slot frees; the queued request is served
    waiter.join(120)
    assert queued_answer["r"].status_code == 200


def test_a_request_waiting_too_long_gets_503(
    rel_backend: LocalBackend, proxies: list[ServerThread]
) -> None:
    proxy = _proxy(
        rel_backend, admission=AdmissionLimits(max_active=1, max_queued=4, max_wait_seconds=0.3)
    )
    proxies.append(proxy)
    wait_upstream(proxy.url)
    with _half_sent(proxy.url):
        _wait_for(lambda: _admission_of(proxy).in_progress == 1)
        resp = embed(proxy.url, "waits")
    assert resp.status_code == 503 and "retry-after" in resp.headers


# -- #8: slow clients ----------------------------------------------------------------------------


def test_a_client_sending_its_head_slowly_is_cut_off(
    rel_backend: LocalBackend, proxies: list[ServerThread]
) -> None:
    proxy = _proxy(rel_backend, connection_limits=ConnectionLimits(head_timeout_seconds=0.5))
    proxies.append(proxy)
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert sock.recv(1024) == b""  # closed by the proxy (before: recv timed out)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        assert sock.recv(1024) == b""  # a connection that sends nothing at all, too


def test_a_client_sending_its_body_slowly_gets_408(
    rel_backend: LocalBackend, proxies: list[ServerThread]
) -> None:
    proxy = _proxy(rel_backend, admission=AdmissionLimits(body_timeout_seconds=0.5))
    proxies.append(proxy)
    with _half_sent(proxy.url) as sock:
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]


def test_at_the_connection_limit_half_sent_requests_make_room(
    rel_backend: LocalBackend, proxies: list[ServerThread]
) -> None:
    proxy = _proxy(
        rel_backend,
        connection_limits=ConnectionLimits(head_timeout_seconds=120, max_connections=20),
    )
    proxies.append(proxy)
    wait_upstream(proxy.url)
    host, port = proxy.url.removeprefix("http://").split(":")
    slow = []
    for _ in range(40):
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.append(sock)
    try:
        assert httpx.get(proxy.url + "/healthz", timeout=30).status_code == 200
        assert embed(proxy.url, "still served").status_code == 200
        closed = 0
        for sock in slow[:20]:  # the oldest were closed to make room
            sock.settimeout(10)
            try:
                closed += sock.recv(1) == b""
            except OSError:
                closed += 1
        assert closed >= 15
    finally:
        for sock in slow:
            sock.close()


# -- #9: the local backend admits before reading --------------------------------------------------


def test_the_local_backend_admits_before_reading_bodies(rel_backend: LocalBackend) -> None:
    backend = LocalBackend(
        rel_backend.workspace,
        identity=rel_backend.identity,
        engine=rel_backend.engine,
        limits=BackendLimits(max_concurrent_requests=1),
    )
    backend.start()
    try:
        admission = backend._app.state.backend.runtime.admission
        first = _half_sent(backend.url)  # admitted, its body still coming
        _wait_for(lambda: admission.in_progress == 1)
        host, port = backend.url.removeprefix("http://").split(":")
        head = (
            f"POST /v1/embeddings HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        result: dict[str, Any] = {}
        sender = threading.Thread(
            target=lambda: result.setdefault(
                "r", _send_until_answered(backend.url, head, 80 * 1024 * 1024)
            )
        )
        sender.start()
        _wait_for(lambda: admission.waiting == 1)
        # The second body is not read while the first holds the only slot: the sender stalls
        # once the socket buffers are full, far below the 64 MiB body limit.
        time.sleep(1.0)
        assert admission.waiting == 1 and admission.in_progress == 1
        first.close()
        sender.join(120)
        answer, sent = result["r"]
        # Refused once past the 64 MiB limit (413, or a reset that swallowed it), not read on.
        assert answer.startswith(b"HTTP/1.1 413") or answer == b"", answer[:100]
        assert 64 * 1024 * 1024 < sent <= 72 * 1024 * 1024
    finally:
        backend.stop()


# -- #12 and #13: /v1/models errors, /healthz tells what it saw -------------------------------


def test_a_non_json_models_error_is_answered_in_openai_shape(
    rel_backend: LocalBackend, relay: FaultRelay, proxies: list[ServerThread]
) -> None:
    proxy = _proxy(rel_backend, relay.url)
    proxies.append(proxy)
    wait_upstream(proxy.url)
    relay.on("/v1/models", respond(502, b"<html>Bad Gateway</html>", {"content-type": "text/html"}))
    resp = httpx.get(proxy.url + "/v1/models", timeout=30)
    assert resp.status_code == 502
    assert resp.headers["content-type"].startswith("application/json")
    err = error_of(resp)
    assert "502" in err["message"] and "Bad Gateway" in err["message"]


def test_healthz_reports_the_last_upstream_answer_and_a_stall(
    rel_backend: LocalBackend, relay: FaultRelay, proxies: list[ServerThread]
) -> None:
    proxy = _proxy(rel_backend, relay.url, session_options={"timeout_seconds": 1.0})
    proxies.append(proxy)
    wait_upstream(proxy.url)
    health = httpx.get(proxy.url + "/healthz").json()
    assert health["last_upstream_answer_at"] is None
    assert embed(proxy.url, "hello").status_code == 200
    health = httpx.get(proxy.url + "/healthz").json()
    assert health["upstream"] == "ready" and health["last_upstream_answer_at"] is not None
    relay.on(EMBEDDINGS, stall(10.0))
    assert embed(proxy.url, "stalled").status_code == 504
    health = httpx.get(proxy.url + "/healthz").json()
    assert health["upstream"] == "failing"  # before: 'ready' (a secret was held)
    assert health["last_error"] and health["last_error_at"] > health["last_upstream_answer_at"]
    status = httpx.get(proxy.url + "/?format=json").json()
    assert status["state"] == "failing" and status["upstream_timeout_seconds"] == 1.0
    assert embed(proxy.url, "recovered").status_code == 200
    assert httpx.get(proxy.url + "/healthz").json()["upstream"] == "ready"



# -- #10: sync classes surface a failure or Ctrl-C at once -------------------------------------


class HoldingServer:
    """An OpenAI-shaped test server (not a model): a request whose input contains 'bad' gets an
    immediate 400; every other request is held until `release` is set (or 60 s pass, which only
    code that waits for in-flight requests would ever see)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.released_by_watchdog = False
        self.texts_seen: list[str] = []
        self.held = 0
        app = FastAPI()

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> JSONResponse:
            import asyncio

            texts = (await request.json())["input"]
            self.texts_seen.extend(texts)
            if any("bad" in t for t in texts):
                error = {"message": "scripted refusal", "type": "invalid_request_error",
                         "param": None, "code": None}
                return JSONResponse({"error": error}, status_code=400)
            self.held += 1
            if not await asyncio.to_thread(self.release.wait, 60):
                self.released_by_watchdog = True
            data = [{"object": "embedding", "index": i, "embedding": [1.0, 0.0]}
                    for i in range(len(texts))]
            return JSONResponse({"object": "list", "data": data, "model": "held",
                                 "usage": {"prompt_tokens": 1, "total_tokens": 1}})

        self.server = ServerThread(app)
        self.server.start()

    def client(self) -> Any:
        from privatemode_integrations import EmbeddingsClient

        return EmbeddingsClient(
            base_url=self.server.url + "/v1", model="held", batch_size=1, max_concurrency=2
        )

    def close(self) -> None:
        self.release.set()
        self.server.stop()


def test_a_failed_batch_surfaces_at_once_and_the_other_batches_are_cancelled() -> None:
    server = HoldingServer()
    try:
        with server.client() as client, pytest.raises(Exception, match="scripted refusal"):
            client.embed(["held 0", "bad 1", "never 2", "never 3", "never 4"])
        # Raised while batch 0 was still held: nobody waited for it.
        assert not server.release.is_set() and not server.released_by_watchdog
        assert not any(t.startswith("never") for t in server.texts_seen), server.texts_seen
    finally:
        server.close()


def test_ctrl_c_during_a_sync_call_surfaces_at_once() -> None:
    import signal

    server = HoldingServer()
    main = threading.main_thread().ident
    assert main is not None

    def interrupt_when_both_are_held() -> None:
        _wait_for(lambda: server.held >= 2)
        signal.pthread_kill(main, signal.SIGINT)

    try:
        with server.client() as client:
            threading.Thread(target=interrupt_when_both_are_held, daemon=True).start()
            with pytest.raises(KeyboardInterrupt):
                client.embed(["held 0", "held 1", "never 2", "never 3"])
        assert not server.released_by_watchdog  # the held requests were abandoned
        assert not any(t.startswith("never") for t in server.texts_seen)
    finally:
        server.close()
