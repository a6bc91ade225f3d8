"""Secrets and API keys never appear in logs, error messages, reprs, /healthz or the status page.

One run through everything that writes text: normal requests, a forgotten secret and its renewal,
a backend restart, tampered answers, bad requests, a wrong API key, a forged secret exchange,
all with DEBUG logging on every logger (ours, uvicorn, httpx, httpcore). Then every log record
(with tracebacks), everything written to stdout/stderr, every HTTP answer the clients got, the
health and status pages and the reprs of the objects that hold a key are scanned for each API
key and for every exchanged secret, in every encoding a leak would take (raw, hex, base64, repr,
and 16-byte pieces of the hex).
"""

from __future__ import annotations

import base64
import logging
import secrets
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from privatemode_proxy import BatchLimits, LocalStack
from privatemode_proxy.local import LocalBackend
from privatemode_proxy.protocol import RequestCipher
from reliability_relay import (
    Exchange,
    FaultRelay,
    Response,
    Token,
    flip_hex,
    no_secret_for_id,
    rewrite,
)
from reliability_support import (
    EMBEDDINGS,
    MODEL,
    SECRET,
    TEXTS,
    find_leaks,
    proxy_session,
    start_proxy,
    wait_upstream,
)


def _tamper(_exchange: Exchange, answer: Response) -> Response:
    obj = orjson.loads(answer.body)
    token = Token.parse(obj["data"])
    token.ciphertext = flip_hex(token.ciphertext, 7)
    obj["data"] = str(token)
    return Response(answer.status, orjson.dumps(obj), answer.headers)


def _bad_signature(_exchange: Exchange, answer: Response) -> Response:
    fields = orjson.loads(answer.body)
    signature = bytearray(base64.b64decode(fields["Signature"]))
    signature[-1] ^= 1
    fields["Signature"] = base64.b64encode(bytes(signature)).decode()
    return Response(200, orjson.dumps(fields), answer.headers)


def _formatted(records: list[logging.LogRecord]) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(r) for r in records)


def test_no_secret_or_api_key_in_any_text_the_stack_produced(
    local_stack: LocalStack,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    api_key = "sk-pm-" + secrets.token_urlsafe(24)
    wrong_key = "sk-pm-" + secrets.token_urlsafe(24)
    client_key = "sk-client-" + secrets.token_urlsafe(24)
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "uvicorn", "uvicorn.error", "privatemode_proxy"):
        logging.getLogger(name).setLevel(logging.DEBUG)

    shared = local_stack.backend
    backend = LocalBackend(
        tmp_path / "backend", identity=shared.identity, engine=shared.engine, api_key=api_key
    ).start()
    relay = FaultRelay(backend.url, backend=backend).start()
    proxy = start_proxy(
        backend,
        api_url=relay.url,
        api_key=api_key,
        limits=BatchLimits(max_inputs_per_request=4),
        log_level="debug",
    )
    texts: dict[str, str] = {}  # where -> text, for the scan
    keys: dict[str, bytes] = {}
    answers: list[str] = []

    def remember_secrets() -> None:
        for exchange in relay.exchanges:
            sid = exchange.secret_id
            if sid and sid not in keys:
                key = backend.secret_store.get(sid)
                if key is not None:
                    keys[sid] = key
        state = proxy_session(proxy)._state
        if state is not None:
            keys.setdefault(state.secret.id, state.secret.key)

    def call(url: str, body: Any, **kwargs: Any) -> httpx.Response:
        resp = httpx.post(
            url + EMBEDDINGS,
            content=body if isinstance(body, bytes) else orjson.dumps(body),
            headers={"Authorization": f"Bearer {client_key}", "Content-Type": "application/json"},
            timeout=60,
            **kwargs,
        )
        answers.append(f"{resp.status_code} {dict(resp.headers)} {resp.text}")
        return resp

    others: list[Any] = []
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        # 1. normal requests, both encodings, split into sub-requests
        for fmt in ("float", "base64"):
            assert (
                call(
                    proxy.url, {"model": MODEL, "input": TEXTS, "encoding_format": fmt}
                ).status_code
                == 200
            )
        remember_secrets()
        # 2. the worker forgets the secret; one renewal
        relay.on(EMBEDDINGS, no_secret_for_id())
        assert call(proxy.url, {"model": MODEL, "input": TEXTS[:3]}).status_code == 200
        remember_secrets()
        # 3. a tampered answer
        relay.on(EMBEDDINGS, rewrite(_tamper, "tamper"))
        assert call(proxy.url, {"model": MODEL, "input": TEXTS[:3]}).status_code == 502
        remember_secrets()
        # 4. a backend restart (secrets lost on the backend)
        backend.stop()
        backend.start()
        assert call(proxy.url, {"model": MODEL, "input": TEXTS[:3]}).status_code == 200
        remember_secrets()
        # 5. bad requests of several kinds
        for bad in (
            b"{",
            b"[]",
            {"model": MODEL},
            {"model": MODEL, "input": [1, 2]},
            {"model": "nope", "input": "x"},
            {"model": MODEL, "input": "word " * 400},
            {"model": MODEL, "input": "x", "dimensions": 7},
        ):
            assert call(proxy.url, bad).status_code in (400, 404)
        # 6. a proxy with the wrong API key, and one that meets a forged exchange signature
        wrong = start_proxy(backend, api_url=backend.url, api_key=wrong_key, log_level="debug")
        others.append(wrong)
        assert wait_upstream(wrong.url)["upstream"] == "failed"
        assert call(wrong.url, {"model": MODEL, "input": "x"}).status_code == 401
        forged_relay = FaultRelay(backend.url, backend=backend).start()
        others.append(forged_relay)
        forged_relay.on(SECRET, rewrite(_bad_signature, "bad_signature"), times=None)
        forged = start_proxy(backend, api_url=forged_relay.url, api_key=api_key, log_level="debug")
        others.append(forged)
        assert wait_upstream(forged.url)["upstream"] == "failed"
        assert call(forged.url, {"model": MODEL, "input": "x"}).status_code == 503
        for exchange in forged_relay.exchanges:  # the forged exchanges' secrets never existed
            assert exchange.secret_id is None

        # What the proxies show about themselves.
        for server in (proxy, wrong, forged):
            for path, params in (("/healthz", {}), ("/", {"format": "json"}), ("/", {})):
                page = httpx.get(server.url + path, params=params, headers={"Accept": "text/html"})
                texts[f"{path}{params} of {server.url}"] = page.text
            session = proxy_session(server)
            texts[f"reprs of {server.url}"] = " ".join(
                repr(o)
                for o in (
                    session,
                    session.config,
                    server._server.config.app.state.config,
                    session._state,
                )
            )
        for sid, key in keys.items():
            texts[f"reprs of secret {sid}"] = repr(RequestCipher(key, sid))
        texts["reprs of the backend"] = " ".join(
            repr(o) for o in (backend, backend.secret_store, backend._app.state.backend)
        )
    finally:
        for other in reversed(others):
            other.stop()
        proxy.stop()
        relay.stop()
        backend.stop()

    captured = capfd.readouterr()
    texts["log records"] = _formatted(caplog.records)
    texts["stderr"] = captured.err
    texts["stdout"] = captured.out
    texts["answers"] = "\n".join(answers)
    wanted: dict[str, bytes | str] = {
        "the API key": api_key,
        "the wrong API key": wrong_key,
        "the client's key": client_key,
        **{f"secret {sid}": key for sid, key in keys.items()},
    }

    # The scan is real: it saw logs and secrets, and it finds a secret where there is one.
    assert len(keys) >= 3, keys.keys()  # first, renewed after no-secret, renewed after restart
    assert len(caplog.records) > 20
    assert any(
        r.name.startswith("privatemode_proxy") and r.levelno >= logging.WARNING
        for r in caplog.records
    )
    some_key = next(iter(keys.values()))
    assert find_leaks({"planted": f"x{some_key.hex()}x"}, {"k": some_key}) == ["k in planted"]
    assert find_leaks({"planted": base64.b64encode(some_key).decode()}, {"k": some_key})
    assert find_leaks({"planted": f"Bearer {api_key}"}, {"k": api_key})

    assert find_leaks(texts, wanted) == []
