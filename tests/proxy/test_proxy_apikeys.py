"""API keys as the real service wants them: the proxy's `--apiKey`, or each app's own key.

The local backend plays the key-checking service (`api_keys=`: a set of valid keys, 401 for any
other, as api.privatemode.ai does). Everything else is real: attestation, exchanges, encryption,
the model.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from _proxyhelpers import MODEL, start_proxy, wait_upstream
from privatemode_proxy import LocalStack, SessionConfig
from privatemode_proxy._keymodes import ApiKey, bearer_token
from privatemode_proxy._session import UpstreamSession, refused_api_key
from privatemode_proxy.local import LocalBackend

from privatemode_integrations import AuthenticationError, PrivatemodeEmbeddings

KEY_A = "pm-team-a-6b1f0c"
KEY_B = "pm-team-b-91d2e4"
WRONG = "pm-wrong-0000"
ATTEST = "/privatemode/v1/attest"
SECRET = "/privatemode/v1/secret"
EMBEDDINGS = "/v1/embeddings"


@pytest.fixture()
def keyed_backend(local_stack: LocalStack, tmp_path: Path) -> Iterator[LocalBackend]:
    """A local backend that, like the real service, serves only requests with a valid key."""
    shared = local_stack.backend
    backend = LocalBackend(
        tmp_path / "backend",
        identity=shared.identity,
        engine=shared.engine,
        api_keys={KEY_A, KEY_B},
    )
    backend.start()
    yield backend
    backend.stop()


def _embed(url: str, key: str | None, text: str = "hello") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(
        url + EMBEDDINGS, json={"model": MODEL, "input": [text]}, headers=headers, timeout=60
    )


def _status(url: str) -> dict[str, object]:
    body: dict[str, object] = httpx.get(url + "/", params={"format": "json"}).json()
    return body


def test_keyless_proxy_serves_an_app_with_its_own_key(keyed_backend: LocalBackend) -> None:
    proxy = start_proxy(keyed_backend)
    try:
        # The keyless warm-up is refused; that is waiting for the apps' keys, not a failure.
        assert wait_upstream_settled(proxy.url)["upstream"] == "pending"
        assert keyed_backend.request_log.count(EMBEDDINGS) == 0
        resp = _embed(proxy.url, KEY_A)
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["data"][0]["embedding"]) == 384
        assert keyed_backend.request_log.count(EMBEDDINGS) == 1
        status = _status(proxy.url)
        assert status["ready"] is True
        assert status["app_keys_with_secret"] == 1
        assert KEY_A not in str(status)
        assert KEY_A not in httpx.get(proxy.url + "/").text
        # The model list is asked with the app's key too.
        models = httpx.get(proxy.url + "/v1/models", headers={"Authorization": f"Bearer {KEY_A}"})
        assert models.status_code == 200 and models.json()["data"][0]["id"] == MODEL
        refused = httpx.get(proxy.url + "/v1/models", headers={"Authorization": f"Bearer {WRONG}"})
        assert refused.status_code == 401
    finally:
        proxy.stop()


def wait_upstream_settled(url: str) -> dict[str, object]:
    """/healthz once the keyless warm-up exchange has been refused (the API wants keys)."""
    for _ in range(600):
        if _status(url)["waiting_for_app_key"]:
            body: dict[str, object] = httpx.get(url + "/healthz").json()
            return body
        time.sleep(0.05)
    raise TimeoutError("the keyless warm-up exchange was never refused")


def test_keyless_proxy_wrong_key_is_a_401_at_the_app_and_nothing_is_sent(
    keyed_backend: LocalBackend,
) -> None:
    proxy = start_proxy(keyed_backend)
    try:
        wait_upstream_settled(proxy.url)
        resp = _embed(proxy.url, WRONG)
        assert resp.status_code == 401
        error = resp.json()["error"]
        assert error["type"] == "authentication_error"
        assert "incorrect API key provided" in error["message"]  # the service's own message
        assert WRONG not in resp.text
        # No key at all is refused the same way.
        assert _embed(proxy.url, None).status_code == 401

        attests = keyed_backend.request_log.count(ATTEST)
        embeddings = PrivatemodeEmbeddings(
            base_url=proxy.url + "/v1", api_key=WRONG, model=MODEL, max_retries=3
        )
        with pytest.raises(AuthenticationError) as caught:
            embeddings.embed_documents(["private text"])
        assert caught.value.status_code == 401
        assert caught.value.attempts == 1  # the class did not retry a refused key
        assert keyed_backend.request_log.count(ATTEST) == attests + 1  # one exchange attempt
        assert WRONG not in str(caught.value) and WRONG not in repr(caught.value)
        # Not one inference request went upstream with a refused key.
        assert keyed_backend.request_log.count(EMBEDDINGS) == 0
        assert keyed_backend.request_log.count(SECRET) == 0
    finally:
        proxy.stop()


async def _two_apps(url: str, rounds: int) -> list[tuple[str, int]]:
    async with httpx.AsyncClient(timeout=60) as client:

        async def call(key: str, i: int) -> tuple[str, int]:
            resp = await client.post(
                url + EMBEDDINGS,
                json={"model": MODEL, "input": [f"{key} text {i}"]},
                headers={"Authorization": f"Bearer {key}"},
            )
            return key, resp.status_code

        return await asyncio.gather(
            *(call(key, i) for i in range(rounds) for key in (KEY_A, KEY_B))
        )


def test_two_apps_with_two_keys_are_each_served_with_their_own(
    keyed_backend: LocalBackend,
) -> None:
    proxy = start_proxy(keyed_backend)
    try:
        wait_upstream_settled(proxy.url)
        results = asyncio.run(_two_apps(proxy.url, 4))
        assert sorted(results) == sorted([(KEY_A, 200), (KEY_B, 200)] * 4)
        # One secret per key, shared by that key's concurrent requests.
        assert keyed_backend.request_log.count(SECRET) == 2
        assert _status(proxy.url)["app_keys_with_secret"] == 2

        # The service revokes B's key: B's requests (sent with B's key) are refused, A's are not.
        keyed_backend.set_api_keys({KEY_A})
        resp_b = _embed(proxy.url, KEY_B)
        assert resp_b.status_code == 401, resp_b.text
        assert resp_b.json()["error"]["type"] == "authentication_error"
        assert _embed(proxy.url, KEY_A).status_code == 200
    finally:
        proxy.stop()


def test_proxy_api_key_overrides_the_apps_key(keyed_backend: LocalBackend) -> None:
    proxy = start_proxy(keyed_backend, session_options={"api_key": KEY_A})
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        exchanges = keyed_backend.request_log.count(SECRET)
        for app_key in (WRONG, KEY_B, None):
            resp = _embed(proxy.url, app_key)
            assert resp.status_code == 200, resp.text
        # All served with the proxy's key and its one secret.
        assert keyed_backend.request_log.count(SECRET) == exchanges
        assert _status(proxy.url)["api_keys"] == "the proxy's --apiKey"
        # Revoking any other key changes nothing: only the proxy's key was ever sent.
        keyed_backend.set_api_keys({KEY_A})
        assert _embed(proxy.url, KEY_B).status_code == 200
    finally:
        proxy.stop()


def test_refused_proxy_key_is_found_before_start(keyed_backend: LocalBackend) -> None:
    def config(key: str | None) -> SessionConfig:
        return SessionConfig(
            api_url=keyed_backend.url, trusted_roots=(), manifest=_no_manifest, api_key=key
        )

    problem = refused_api_key(config(WRONG))
    assert problem is not None
    assert "HTTP 401" in problem and "refused the API key" in problem
    assert WRONG not in problem and "\n" not in problem
    assert refused_api_key(config(KEY_A)) is None
    assert refused_api_key(config(None)) is None
    # Nothing but the probe reached the backend.
    assert keyed_backend.request_log.count(SECRET) == 0


async def _no_manifest(_client: httpx.AsyncClient) -> bytes:
    raise AssertionError("the probe needs no manifest")


def test_api_key_value_never_shows() -> None:
    key = ApiKey("sk-very-secret", "app")
    assert "sk-very-secret" not in repr(key) and "sk-very-secret" not in str(key)
    assert key.id.startswith("key-") and key.id == ApiKey("sk-very-secret", "proxy").id
    assert key.id != ApiKey("sk-other", "app").id
    assert key.authorization == "Bearer sk-very-secret"
    assert bearer_token("Bearer  abc ") == "abc"
    assert bearer_token("bearer abc") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_cli_with_a_refused_api_key_stops_with_one_line(
    keyed_backend: LocalBackend, tmp_path: Path
) -> None:
    from privatemode_proxy._serving import free_port
    from test_proxy_cli import _cli

    run = subprocess.run(
        [
            *_cli(),
            "--apiEndpoint",
            keyed_backend.url,
            "--trustedRoot",
            str(keyed_backend.root_pem_path),
            "--manifestPath",
            str(keyed_backend.manifest_path),
            "--apiKey",
            WRONG,
            "--port",
            str(free_port()),
            "--workspace",
            str(tmp_path / "ws"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, run.stderr
    assert errors[0].startswith("privatemode-proxy: error: --apiKey: ")
    assert "HTTP 401" in errors[0]
    assert "Traceback" not in run.stderr + run.stdout
    assert WRONG not in run.stderr + run.stdout
    assert keyed_backend.request_log.count(EMBEDDINGS) == 0


def test_app_key_slots_are_bounded_and_refused_keys_forgotten(
    keyed_backend: LocalBackend,
) -> None:
    """Many keys (or a stream of wrong ones) cost bounded memory in a keyless proxy."""
    config = SessionConfig(
        api_url=keyed_backend.url,
        trusted_roots=(),
        manifest=_no_manifest,
        max_api_keys=2,
    )
    session = UpstreamSession(config)
    keys = [session.api_key_for(f"Bearer app-key-{i}") for i in range(5)]
    slots = [session._secrets.slot_for(k) for k in keys]
    assert len(session._secrets.app_slots) == 2  # the least recently used were forgotten
    assert session._secrets.slot_for(keys[4]) is slots[4]
    assert session._secrets.slot_for(None) is session._secrets.default
    with_proxy_key = UpstreamSession(replace(config, api_key=KEY_A))
    assert with_proxy_key.api_key_for(f"Bearer {KEY_B}") == ApiKey(KEY_A, "proxy")
    assert with_proxy_key._secrets.slot_for(ApiKey(KEY_B, "app")) is with_proxy_key._secrets.default

    proxy = start_proxy(keyed_backend)
    try:
        wait_upstream_settled(proxy.url)
        for i in range(5):
            assert _embed(proxy.url, f"wrong-{i}").status_code == 401
        assert _status(proxy.url)["app_keys_with_secret"] == 0
        running = proxy._server.config.app.state.session
        assert running._secrets.app_slots == {}
    finally:
        proxy.stop()
