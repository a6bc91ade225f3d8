"""`privatemode-proxy` as a user runs it: real processes, real ports, real logs."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from _proxyhelpers import MODEL, post_embeddings
from privatemode_proxy import LocalStack
from privatemode_proxy._serving import free_port

SECRET_TEXT = "Kontonummer DE89 3704 0044 0532 0130 00 gehört Frau Mustermann"
API_KEY = "pm-test-key-4f1c9a7e"


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("privatemode-proxy")
    if script.exists():
        return [str(script)]
    found = shutil.which("privatemode-proxy")
    if found:
        return [found]
    return [sys.executable, "-m", "privatemode_proxy._cli"]


class _Process:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._handle = log.open("wb")
        self.proc = subprocess.Popen(
            [*_cli(), *args],
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._handle.close()
        return self.output()


def _wait_ready(url: str, process: _Process, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            pytest.fail(f"process exited early:\n{process.output()}")
        try:
            body = httpx.get(url + "/healthz", timeout=5).json()
            if body.get("upstream") == "ready":
                return
            if body.get("upstream") == "failed":
                pytest.fail(f"upstream failed: {body}\n{process.output()}")
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"not ready in {timeout} s:\n{process.output()}")


@pytest.fixture(scope="module")
def expected(local_stack: LocalStack) -> np.ndarray:
    resp = post_embeddings(local_stack.proxy_url, {"model": MODEL, "input": SECRET_TEXT})
    return np.asarray(resp.json()["data"][0]["embedding"], dtype=np.float32)


@pytest.fixture()
def processes() -> Iterator[list[_Process]]:
    started: list[_Process] = []
    yield started
    for p in reversed(started):
        p.stop()


def test_help_lists_the_flags() -> None:
    out = subprocess.run([*_cli(), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("--apiKey", "--apiEndpoint", "--local", "--trustedRoot", "--manifestPath"):
        assert flag in out.stdout
    sub = subprocess.run(
        [*_cli(), "local-backend", "--help"], capture_output=True, text=True, timeout=60
    )
    assert sub.returncode == 0
    assert "--workspace" in sub.stdout and "root.pem" in sub.stdout


def test_bad_flags_fail_with_a_message(tmp_path: Path) -> None:
    out = subprocess.run(
        [*_cli(), "--tlsCertPath", str(tmp_path / "c.pem"), "--manifestPath", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "--tlsCertPath and --tlsKeyPath must be given together" in out.stderr


def test_local_mode(tmp_path: Path, processes: list[_Process], expected: np.ndarray) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    port = free_port()
    proxy = _Process(
        [
            "--local",
            "--port",
            str(port),
            "--workspace",
            str(tmp_path / "ws"),
            "--apiKey",
            f"@{key_file}",
            "--log-level",
            "debug",
        ],
        tmp_path / "proxy.log",
    )
    processes.append(proxy)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, proxy)
    resp = post_embeddings(url, {"model": MODEL, "input": [SECRET_TEXT]})
    assert resp.status_code == 200, resp.text
    got = np.asarray(resp.json()["data"][0]["embedding"], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert "LOCAL MODE" in httpx.get(url + "/").text
    logs = proxy.stop()
    assert "LOCAL MODE" in logs
    assert "NOT" in logs and "Privatemode's service" in logs
    # debug logs, and still no API key and no input text
    assert API_KEY not in logs
    assert SECRET_TEXT not in logs and "Mustermann" not in logs
    assert (tmp_path / "ws" / "local-backend" / "root.pem").is_file()


def test_separate_local_backend_with_trusted_root(
    tmp_path: Path, processes: list[_Process], expected: np.ndarray
) -> None:
    backend_dir = tmp_path / "backend"
    backend_port = free_port()
    backend = _Process(
        ["local-backend", "--port", str(backend_port), "--workspace", str(backend_dir)],
        tmp_path / "backend.log",
    )
    processes.append(backend)
    deadline = time.monotonic() + 180
    while "listening on" not in backend.output():
        if backend.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"local backend did not start:\n{backend.output()}")
        time.sleep(0.2)
    assert str(backend_dir / "root.pem") in backend.output()
    proxy_port = free_port()
    proxy = _Process(
        [
            "--apiEndpoint",
            f"http://127.0.0.1:{backend_port}",
            "--trustedRoot",
            str(backend_dir / "root.pem"),
            "--manifestPath",
            str(backend_dir / "manifest.json"),
            "--port",
            str(proxy_port),
            "--workspace",
            str(tmp_path / "proxy-ws"),
            "--log-format",
            "json",
        ],
        tmp_path / "proxy.log",
    )
    processes.append(proxy)
    url = f"http://127.0.0.1:{proxy_port}"
    _wait_ready(url, proxy)
    resp = post_embeddings(url, {"model": MODEL, "input": SECRET_TEXT, "encoding_format": "base64"})
    assert resp.status_code == 200, resp.text
    import base64

    got = np.frombuffer(base64.b64decode(resp.json()["data"][0]["embedding"]), "<f4")
    np.testing.assert_allclose(got, expected, atol=1e-5)
    logs = proxy.stop()
    assert "LOCAL MODE" not in logs
    first_json = next(line for line in logs.splitlines() if line.startswith("{"))
    assert '"level"' in first_json
    assert SECRET_TEXT not in logs + backend.stop()
