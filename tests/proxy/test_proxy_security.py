"""Fail closed, encrypt everything, recover as the protocol says: through real sockets.

The traffic between the proxy and the backend is captured by a real TCP relay (_relay.py),
so these tests read the actual bytes on the wire.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from _proxyhelpers import MODEL, post_embeddings, start_proxy, wait_upstream
from _relay import TcpRelay
from privatemode_proxy import BatchLimits, LocalStack
from privatemode_proxy._serving import ServerThread
from privatemode_proxy.local import LocalBackend

SECRET_TEXTS = [
    "Patient Jane Q. Doe, born 1971-03-04, diagnosis: ZEBRA-7731 syndrome.",
    "The merger with Globex closes on 2031-11-02 at 41.17 EUR per share.",
    "Passwort des Tresors: Kürbis-Möwe-42",
    "機密: プロジェクト・オーロラは延期されました",
]


def _relay_for(backend: LocalBackend) -> TcpRelay:
    parts = urlsplit(backend.url)
    assert parts.hostname is not None and parts.port is not None
    return TcpRelay(parts.hostname, parts.port).start()


@pytest.fixture()
def backend(local_stack: LocalStack, tmp_path: Path) -> Iterator[LocalBackend]:
    """A backend of its own (same model engine as the shared stack, fresh keys and secrets)."""
    b = LocalBackend(tmp_path / "backend", engine=local_stack.backend.engine)
    b.start()
    yield b
    b.stop()


def test_wrong_manifest_gives_503_and_no_request_reaches_the_backend(
    backend: LocalBackend,
) -> None:
    manifest = json.loads(Path(backend.manifest_path).read_bytes())
    # a manifest that differs from the attested one (another valid JSON document)
    wrong = json.dumps({**manifest, "Extra": "not the attested manifest"}).encode()
    proxy = start_proxy(backend, manifest=wrong)
    try:
        health = wait_upstream(proxy.url)
        assert health["upstream"] == "failed"
        resp = post_embeddings(proxy.url, {"model": MODEL, "input": SECRET_TEXTS})
        assert resp.status_code == 503
        error = resp.json()["error"]
        assert error["code"] == "attestation_failed"
        assert "attestation of" in error["message"]
        assert "manifest" in error["message"].lower()
        # the status page says what failed too, and shows no attestation
        status = httpx.get(proxy.url + "/", params={"format": "json"}).json()
        assert status["attestation"] is None and status["secret"] is None
        assert "manifest" in status["last_error"].lower()
    finally:
        proxy.stop()
    assert backend.request_log.count("/v1/embeddings") == 0
    assert backend.request_log.count("/privatemode/v1/secret") == 0
    assert backend.request_log.count("/privatemode/v1/attest") >= 1


def test_untrusted_root_gives_503(
    backend: LocalBackend, local_stack: LocalStack, tmp_path: Path
) -> None:
    from privatemode_proxy import ProxyConfig, SessionConfig, create_proxy_app, pinned_manifest
    from privatemode_proxy._serving import ServerThread
    from privatemode_proxy.attestation import amd_roots

    # Only AMD's roots: the local backend's self-made chain must not be accepted.
    config = ProxyConfig(
        session=SessionConfig(
            api_url=backend.url,
            trusted_roots=tuple(amd_roots()),
            manifest=pinned_manifest(Path(backend.manifest_path).read_bytes()),
        )
    )
    proxy = ServerThread(create_proxy_app(config))
    proxy.start()
    try:
        resp = post_embeddings(proxy.url, {"model": MODEL, "input": "x"})
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "attestation_failed"
    finally:
        proxy.stop()
    assert backend.request_log.count("/v1/embeddings") == 0


def test_wire_traffic_contains_no_input_text(backend: LocalBackend) -> None:
    relay = _relay_for(backend)
    proxy = start_proxy(backend, api_url=relay.url, limits=BatchLimits(max_inputs_per_request=2))
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        for encoding in ("float", "base64"):
            resp = post_embeddings(
                proxy.url,
                {"model": MODEL, "input": SECRET_TEXTS, "encoding_format": encoding, "user": "u-1"},
            )
            assert resp.status_code == 200, resp.text
        vectors = np.stack(
            [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in resp.json()["data"]]
        )
    finally:
        proxy.stop()
        relay.stop()
    to_backend, from_backend = relay.captured()
    # the capture is real: it holds the protocol's requests and encrypted fields
    assert b"POST /privatemode/v1/attest" in to_backend
    assert b"POST /privatemode/v1/secret" in to_backend
    assert to_backend.count(b"POST /v1/embeddings") == 4  # 2 encodings x 2 sub-requests
    # the headers of protocol section 4 on every inference request
    head = to_backend[to_backend.index(b"POST /v1/embeddings") :].split(b"\r\n\r\n")[0].lower()
    for header in (
        b"privatemode-version: v1.",
        b"privatemode-os: ",
        b"privatemode-architecture: ",
        b"privatemode-client: proxy",
        b"privatemode-target-model: all-minilm-l6-v2",
        b"privatemode-secret-id: ",
        b"privatemode-nvidia-ocsp-policy: rules=allow-good,allow-revoked,allow-unknown; "
        b"revocation-time-not-before=",
        b"privatemode-nvidia-ocsp-policy-mac: ",
        b"privatemode-user-request-id: proxy_",
    ):
        assert header in head, header
    wire = to_backend + from_backend
    for text in SECRET_TEXTS:
        for form in (
            text.encode(),
            json.dumps(text).encode(),  # JSON-escaped (\\u...) form
            json.dumps(text, ensure_ascii=False).encode(),
        ):
            assert form not in wire
    for word in (b"ZEBRA-7731", b"Globex", b"Tresors", "プロジェクト".encode()):
        assert word not in wire
    assert b"u-1" not in to_backend  # the 'user' field is encrypted too
    # nor do the vectors travel in the clear (upstream answers base64; look for each row's bytes)
    for row in vectors:
        assert base64.b64encode(row.tobytes())[:24] not in from_backend
        assert row.tobytes()[:16] not in from_backend


def test_no_secret_for_id_triggers_one_new_exchange(local_stack: LocalStack) -> None:
    url = local_stack.proxy_url
    first = post_embeddings(url, {"model": MODEL, "input": "before"})
    assert first.status_code == 200
    exchanges = local_stack.attestation_summary()["secret_exchanges"]
    log = local_stack.backend.request_log
    secret_calls = log.count("/privatemode/v1/secret")
    embed_calls = log.count("/v1/embeddings")

    local_stack.backend.secret_store.clear()  # the worker forgets every secret

    resp = post_embeddings(url, {"model": MODEL, "input": "after"})
    assert resp.status_code == 200, resp.text
    assert local_stack.attestation_summary()["secret_exchanges"] == exchanges + 1
    assert log.count("/privatemode/v1/secret") == secret_calls + 1
    assert log.count("/v1/embeddings") == embed_calls + 2  # refused once, then answered
    again = post_embeddings(url, {"model": MODEL, "input": "before"})
    np.testing.assert_allclose(
        np.asarray(again.json()["data"][0]["embedding"]),
        np.asarray(first.json()["data"][0]["embedding"]),
        atol=1e-6,
    )


def test_backend_restart_is_survived(backend: LocalBackend) -> None:
    proxy = start_proxy(backend)
    try:
        wait_upstream(proxy.url)
        assert post_embeddings(proxy.url, {"model": MODEL, "input": "one"}).status_code == 200
        backend.stop()
        backend.start()  # same port, every secret gone
        resp = post_embeddings(proxy.url, {"model": MODEL, "input": "two"})
        assert resp.status_code == 200, resp.text
        assert backend.request_log.count("/privatemode/v1/secret") >= 2
    finally:
        proxy.stop()


def test_connection_reset_is_retried_once(backend: LocalBackend) -> None:
    relay = _relay_for(backend)
    proxy = start_proxy(backend, api_url=relay.url)
    try:
        wait_upstream(proxy.url)
        before = backend.request_log.count("/v1/embeddings")
        relay.reset_next(1, b"POST /v1/embeddings")
        resp = post_embeddings(proxy.url, {"model": MODEL, "input": SECRET_TEXTS})
        assert resp.status_code == 200, resp.text
        assert relay.resets_done == 1
        assert backend.request_log.count("/v1/embeddings") == before + 1

        relay.reset_next(2, b"POST /v1/embeddings")  # reset, and reset the retry too
        resp = post_embeddings(proxy.url, {"model": MODEL, "input": SECRET_TEXTS})
        assert resp.status_code == 502
        assert "failed twice" in resp.json()["error"]["message"]
        assert relay.resets_done == 3
        assert backend.request_log.count("/v1/embeddings") == before + 1
    finally:
        proxy.stop()
        relay.stop()
    to_backend, _ = relay.captured()
    for text in SECRET_TEXTS:
        assert text.encode() not in to_backend


def test_backend_down_gives_503_with_reason(local_stack: LocalStack, tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "b", engine=local_stack.backend.engine)
    backend.start()
    url = backend.url
    backend.stop()
    proxy = start_proxy(
        backend, api_url=url, session_options={"exchange_retry_delay_seconds": 0.05}
    )
    try:
        resp = post_embeddings(proxy.url, {"model": MODEL, "input": "x"})
        assert resp.status_code == 503
        assert "could not reach" in resp.json()["error"]["message"]
    finally:
        proxy.stop()


def test_status_page_shows_attestation_never_the_secret(local_stack: LocalStack) -> None:
    summary = local_stack.attestation_summary()
    att = summary["attestation"]
    assert summary["ready"] is True
    for key in ("product", "measurement", "reported_tcb", "manifest_sha256", "verified_at"):
        assert att[key], key
    assert summary["secret"]["use_until"] > summary["secret"]["obtained_at"]
    assert summary["local_mode"] is True

    html = httpx.get(local_stack.proxy_url + "/", headers={"Accept": "text/html"}).text
    assert "LOCAL MODE" in html
    assert att["measurement"] in html
    assert att["manifest_sha256"] in html
    assert "Secret used until" in html

    # The secret itself (read from the proxy's session for this check only) appears nowhere.
    from privatemode_proxy._session import UpstreamSession

    session = local_stack._app.state.session
    assert isinstance(session, UpstreamSession)
    state = session._state
    assert state is not None
    secret_key = state.secret.key
    for form in (
        secret_key.hex(),
        base64.b64encode(secret_key).decode(),
        secret_key.hex().upper(),
    ):
        assert form not in html
        assert form not in json.dumps(summary)
    assert state.secret.id not in html  # not even the ID


# -- web pages must not use the proxy (issue 13 #2) -----------------------------------------------


def _guarded_proxy(local_stack: LocalStack, **browser: tuple[str, ...]) -> ServerThread:
    from privatemode_proxy import ProxyConfig, SessionConfig, create_proxy_app, pinned_manifest
    from privatemode_proxy._guard import BrowserPolicy
    from privatemode_proxy.attestation import load_trusted_root

    backend = local_stack.backend
    config = ProxyConfig(
        session=SessionConfig(
            api_url=backend.url,
            trusted_roots=tuple(load_trusted_root(Path(backend.root_pem_path))),
            manifest=pinned_manifest(Path(backend.manifest_path).read_bytes()),
        ),
        local_mode=True,
        browser=BrowserPolicy.of(**browser),
    )
    server = ServerThread(create_proxy_app(config))
    server.start()
    wait_upstream(server.url)
    return server


def test_simple_requests_foreign_hosts_and_origins_are_refused(local_stack: LocalStack) -> None:
    url = local_stack.proxy_url
    body = json.dumps({"model": MODEL, "input": "x"})
    before = local_stack.backend.request_log.count("/v1/embeddings")
    plain = httpx.post(url + "/v1/embeddings", content=body, headers={"content-type": "text/plain"})
    assert plain.status_code == 415 and plain.json()["error"]["code"] == "unsupported_media_type"
    form = httpx.post(url + "/v1/embeddings", content=body)  # no Content-Type at all
    assert form.status_code == 415
    rebound = httpx.get(url + "/", headers={"host": "evil.test:8080"})
    assert rebound.status_code == 403 and "--allowedHosts" in rebound.json()["error"]["message"]
    assert "attestation" not in rebound.text
    page = httpx.post(
        url + "/v1/embeddings", content=body,
        headers={"content-type": "application/json", "origin": "https://evil.test"},
    )
    assert page.status_code == 403 and "--allowedOrigins" in page.json()["error"]["message"]
    assert local_stack.backend.request_log.count("/v1/embeddings") == before
    # What non-browser clients send still works: JSON, an IP or localhost as Host.
    for host in (None, "localhost", f"127.0.0.1:{urlsplit(url).port}", "[::1]:1"):
        headers = {"content-type": "application/json; charset=utf-8"}
        if host:
            headers["host"] = host
        resp = httpx.post(url + "/v1/embeddings", content=body, headers=headers)
        assert resp.status_code == 200, (host, resp.text)


def test_allowed_hosts_and_origins_get_through(local_stack: LocalStack) -> None:
    proxy = _guarded_proxy(
        local_stack, hosts=("proxy.internal",), origins=("https://app.example",)
    )
    try:
        body = {"model": MODEL, "input": "x"}
        named = httpx.post(
            proxy.url + "/v1/embeddings", json=body, headers={"host": "proxy.internal"}
        )
        assert named.status_code == 200
        preflight = httpx.options(
            proxy.url + "/v1/embeddings",
            headers={"origin": "https://app.example", "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        cors = httpx.post(
            proxy.url + "/v1/embeddings", json=body, headers={"origin": "https://app.example"}
        )
        assert cors.status_code == 200
        assert cors.headers["access-control-allow-origin"] == "https://app.example"
        other = httpx.post(
            proxy.url + "/v1/embeddings", json=body, headers={"origin": "https://evil.test"}
        )
        assert other.status_code == 403
    finally:
        proxy.stop()


_ATTACK_PAGE = """<!doctype html><meta charset="utf-8"><title>a page the user visits</title>
<script>
async function attack(proxy) {
  const body = JSON.stringify({model: "%(model)s", input: "spend the victim's quota"});
  const out = {};
  try {  // a "simple" request: no preflight, the answer is opaque, the effect is what counts
    await fetch(proxy + "/v1/embeddings", {method: "POST", mode: "no-cors",
                headers: {"Content-Type": "text/plain"}, body});
    out.simple = "sent";
  } catch (e) { out.simple = "blocked"; }
  try {
    const r = await fetch(proxy + "/v1/embeddings", {method: "POST",
                          headers: {"Content-Type": "application/json"}, body});
    const j = await r.json();
    out.json = j.data ? "EMBEDDING " + j.data[0].embedding.length : "status " + r.status;
  } catch (e) { out.json = "blocked"; }
  try {
    const r = await fetch(proxy + "/?format=json");
    out.status = "read " + (await r.text()).slice(0, 60);
  } catch (e) { out.status = "blocked"; }
  return out;
}
</script>"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """Debian's headless Chromium, driven by Playwright (no browser download)."""
    import os
    import shutil

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's package)")
        pytest.skip("chromium not installed: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                # DNS rebinding, simulated: the attacker's name resolves to the proxy's address.
                "--host-resolver-rules=MAP evil.test 127.0.0.1",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


class _PageServer:
    """Serves the attack page from another origin (another port of 127.0.0.1)."""

    def __init__(self) -> None:
        import http.server
        import threading

        page = (_ATTACK_PAGE % {"model": MODEL}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_web_page_in_chromium_cannot_use_the_proxy(
    local_stack: LocalStack, chromium: Any
) -> None:
    pages = _PageServer()
    log = local_stack.backend.request_log
    try:
        context = chromium.new_context()
        page = context.new_page()
        page.goto(pages.url + "/")
        before = log.count("/v1/embeddings")
        got = page.evaluate("proxy => attack(proxy)", local_stack.proxy_url)
        assert got["json"] == "blocked", got  # preflight refused: no readable answer
        assert got["status"] == "blocked", got
        assert log.count("/v1/embeddings") == before, "the simple request reached the backend"

        # DNS rebinding: the attacker's own name now points at the proxy; same-origin requests.
        port = urlsplit(local_stack.proxy_url).port
        rebound = f"http://evil.test:{port}"
        response = page.goto(rebound + "/")
        assert response is not None and response.status == 403
        page.set_content(_ATTACK_PAGE % {"model": MODEL})  # the attacker's script, same origin
        got = page.evaluate("proxy => attack(proxy)", rebound)
        assert not got["json"].startswith("EMBEDDING"), got
        assert "attestation" not in got["status"] and "measurement" not in got["status"], got
        assert log.count("/v1/embeddings") == before
        context.close()
    finally:
        pages.close()


def test_chromium_gets_an_embedding_from_an_allowed_origin(
    local_stack: LocalStack, chromium: Any
) -> None:
    """The control: the same page, allowed by --allowedOrigins, does get one (so the refusals
    above are the guard's doing, not the harness's)."""
    pages = _PageServer()
    proxy = _guarded_proxy(local_stack, origins=(pages.url,))
    try:
        context = chromium.new_context()
        page = context.new_page()
        page.goto(pages.url + "/")
        got = page.evaluate("proxy => attack(proxy)", proxy.url)
        assert got["json"] == "EMBEDDING 384", got
        context.close()
    finally:
        proxy.stop()
        pages.close()


def test_one_info_line_per_request_without_texts_or_keys(
    local_stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14 #12: requests are visible at the default log level, concisely."""
    import logging

    key = "pm-app-key-never-logged-5150"
    with caplog.at_level(logging.INFO, logger="privatemode_proxy.requests"):
        resp = httpx.post(
            local_stack.proxy_url + "/v1/embeddings",
            json={"model": MODEL, "input": SECRET_TEXTS[:2]},
            headers={"authorization": f"Bearer {key}"},
        )
        assert resp.status_code == 200
        refused = httpx.post(local_stack.proxy_url + "/v1/embeddings", content=b"{}")
        assert refused.status_code == 415

        def request_lines() -> list[str]:
            named = "privatemode_proxy.requests"
            return [r.getMessage() for r in caplog.records if r.name == named]

        # The line is written when the server has finished the answer, which the client may see
        # first: wait (boundedly) for both lines rather than race the server's thread.
        deadline = time.monotonic() + 10
        while len(request_lines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    lines = request_lines()
    tokens = resp.json()["usage"]["prompt_tokens"]
    assert any(
        line.startswith("POST /v1/embeddings 200 inputs=2 ") and f"tokens={tokens} " in line
        and line.endswith(" ms")
        for line in lines
    ), lines
    assert any(line.startswith("POST /v1/embeddings 415 ") for line in lines), lines
    logged = "\n".join(lines)
    assert key not in logged and all(t[:20] not in logged for t in SECRET_TEXTS)
