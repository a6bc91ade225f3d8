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
import privatemode_proxy
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


# -- configuration errors: one line naming the flag, exit code 2, no traceback (issue 13 #11,
# issue 12, issue 14 #9/#10) ------------------------------------------------------------------


def _run_cli(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_cli(), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def _assert_one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("privatemode-proxy: error:")]
    assert len(errors) == 1, out.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _amd_ark_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from privatemode_proxy.attestation import amd_roots

    root = amd_roots()[0]
    return root.ark.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def real_manifest(local_stack: LocalStack) -> Path:
    return Path(local_stack.backend.manifest_path)


def test_bad_trusted_root_is_one_line_exit_2(tmp_path: Path, real_manifest: Path) -> None:
    garbage = tmp_path / "root.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    missing = tmp_path / "missing.pem"
    for bad in (garbage, missing):
        out = _run_cli(
            ["--trustedRoot", str(bad), "--manifestPath", str(real_manifest), "--port", "1"]
        )
        _assert_one_line_error(out, "--trustedRoot", str(bad))


def test_trusted_root_may_be_amds_ark_alone_or_the_bundle(tmp_path: Path) -> None:
    from privatemode_proxy._cli import ConfigError, _trusted_roots

    ark = tmp_path / "ark.pem"
    ark.write_bytes(_amd_ark_pem())
    bundle = tmp_path / "ask_ark.pem"
    amd_dir = Path(privatemode_proxy.__file__).parent / "attestation" / "amd_roots"
    bundle.write_bytes((amd_dir / "ask_ark_genoa.pem").read_bytes())
    assert len(_trusted_roots([str(ark), str(bundle)])) == len(_trusted_roots([])) + 1
    # One certificate that is not an AMD ARK: refused, naming the flag and the file.
    own_ask = tmp_path / "ask_only.pem"
    blocks = bundle.read_text().split("-----END CERTIFICATE-----")
    own_ask.write_text(blocks[0] + "-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"--trustedRoot .*ask_only\.pem.*one certificate"):
        _trusted_roots([str(own_ask)])


@pytest.mark.parametrize("content", [b"hello\n", b'{"a": 1}', b"[]", b""])
def test_a_file_that_is_not_a_manifest_is_refused_at_start(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "manifest.json"
    bad.write_bytes(content)
    out = _run_cli(["--manifestPath", str(bad), "--port", str(free_port())])
    line = _assert_one_line_error(out, "--manifestPath", str(bad), "not a Privatemode manifest")
    assert "curl" in line and "/manifest.json" in line  # how to pin the current one


def test_port_in_use_is_reported_before_anything_slow_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = _run_cli(["--local", "--port", str(port), "--workspace", str(tmp_path / "ws")])
    _assert_one_line_error(out, "--port", str(port), "already in use")
    # Refused before the local backend made its keys or loaded its model.
    assert not (tmp_path / "ws" / "local-backend").exists()


def test_other_configuration_errors_are_one_line(tmp_path: Path, real_manifest: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate")
    cases: list[tuple[list[str], tuple[str, ...]]] = [
        (["--tlsCertPath", str(cert), "--tlsKeyPath", str(cert)], ("--tlsCertPath",)),
        (["--tlsCertPath", str(cert)], ("--tlsCertPath and --tlsKeyPath",)),
        (["--apiKey", f"@{tmp_path / 'nokey'}"], ("--apiKey", "cannot read")),
        (["--apiEndpoint", "ftp://x"], ("--apiEndpoint",)),
    ]
    for args, needles in cases:
        out = _run_cli([*args, "--manifestPath", str(real_manifest), "--port", str(free_port())])
        _assert_one_line_error(out, *needles)


# -- API key hygiene (issue 13 #1) ---------------------------------------------------------------

CRLF_KEY = "pm-crlf-key-93c1d7"


def test_key_with_control_characters_is_refused_without_quoting_it(
    tmp_path: Path, real_manifest: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(b"pm-bad\x07key-5521\r\n")
    for key_arg in ("pm-bad\x07key-5521", f"@{key_file}", "pm-bäd-key-5521"):
        out = _run_cli(
            ["--apiKey", key_arg, "--manifestPath", str(real_manifest), "--port", str(free_port())]
        )
        line = _assert_one_line_error(out, "API key", "position")
        assert "5521" not in out.stderr + out.stdout, line


def test_crlf_key_is_stripped_and_served(local_stack: LocalStack, tmp_path: Path) -> None:
    """`--apiKey "$(cat key.txt)"` on a CRLF file: the key is used without the CR/LF, so no
    HTTP library refuses (and quotes) it; nothing shows it anywhere."""
    from _proxyhelpers import start_proxy, wait_upstream
    from privatemode_proxy._cli import read_api_key

    key_file = tmp_path / "key.txt"
    key_file.write_bytes(CRLF_KEY.encode() + b"\r\n")
    assert read_api_key(f"@{key_file}") == CRLF_KEY
    key = read_api_key(key_file.read_bytes().decode())  # as "$(cat key.txt)" keeps the CR
    assert key == CRLF_KEY
    proxy = start_proxy(local_stack.backend, session_options={"api_key": key})
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        resp = post_embeddings(proxy.url, {"model": MODEL, "input": "hello"})
        assert resp.status_code == 200, resp.text
        seen = httpx.get(proxy.url + "/healthz").text + httpx.get(proxy.url + "/").text
        seen += httpx.get(proxy.url + "/?format=json").text
        assert CRLF_KEY not in seen
    finally:
        proxy.stop()


def test_redaction_covers_escaped_forms() -> None:
    import logging

    from privatemode_proxy._cli import _RedactFilter

    raw = CRLF_KEY + "\r\n"
    message = f"Illegal header value b'Bearer {raw!r}' / {raw.encode()!r} / \"{CRLF_KEY}\\r\\n\""
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "%s", (message,), None)
    assert _RedactFilter([raw, CRLF_KEY]).filter(record)
    assert CRLF_KEY not in record.getMessage()


def test_classes_strip_the_key_and_refuse_a_broken_one() -> None:
    from privatemode_integrations import PrivatemodeEmbeddings

    emb = PrivatemodeEmbeddings(base_url="http://127.0.0.1:9/v1", api_key=CRLF_KEY + "\n")
    assert emb.client._headers()["Authorization"] == f"Bearer {CRLF_KEY}"
    with pytest.raises(ValueError) as info:
        PrivatemodeEmbeddings(
            base_url="http://127.0.0.1:9/v1", api_key="pm-x\r\ny-77331"
        ).embed_query("x")
    assert "77331" not in str(info.value) and "77331" not in repr(info.value)
    assert info.value.__cause__ is None or "77331" not in str(info.value.__cause__)
