"""`privatemode-proxy --workers N`: one socket served by N processes, each attested on its own."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from _proxyhelpers import MODEL, post_embeddings
from privatemode_proxy._pacing import RateLimits
from privatemode_proxy._serving import free_port
from privatemode_proxy._workers import share_rate_limits
from test_proxy_cli import _Process, _run_cli, _wait_ready


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _wait_for(check: object, timeout: float = 60.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached")
        time.sleep(0.1)


def test_rate_limits_are_shared_out_and_never_exceeded() -> None:
    limits = RateLimits(requests=20, tokens=100_000, window_seconds=60)
    share = share_rate_limits(limits, 3)
    assert share is not None and share.requests == 6 and share.tokens == 33_333
    assert share.window_seconds == 60
    assert share_rate_limits(limits, 1) is limits
    assert share_rate_limits(None, 4) is None
    with pytest.raises(ValueError, match="--workers 21"):
        share_rate_limits(limits, 21)


def test_workers_refused_in_local_mode(tmp_path: Path) -> None:
    out = _run_cli(["--local", "--workers", "2", "--workspace", str(tmp_path / "ws")])
    assert out.returncode == 2 and "--workers" in out.stderr, out.stderr
    assert not (tmp_path / "ws" / "local-backend").exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_two_workers_serve_one_port_and_replace_a_dead_one(tmp_path: Path) -> None:
    backend_dir = tmp_path / "backend"
    backend_port = free_port()
    backend = _Process(
        ["local-backend", "--port", str(backend_port), "--workspace", str(backend_dir)],
        tmp_path / "backend.log",
    )
    proxy: _Process | None = None
    try:
        _wait_for(lambda: "listening on" in backend.output() or backend.proc.poll() is not None)
        assert backend.proc.poll() is None, backend.output()
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
                "--workers",
                "2",
            ],
            tmp_path / "proxy.log",
        )
        url = f"http://127.0.0.1:{proxy_port}"
        _wait_ready(url, proxy)
        supervisor = proxy.proc.pid
        _wait_for(lambda: len(_children(supervisor)) == 2)
        workers = _children(supervisor)

        def embed_on_fresh_connections(n: int) -> None:
            for i in range(n):
                resp = post_embeddings(url, {"model": MODEL, "input": [f"text {i}"]})
                assert resp.status_code == 200, resp.text
                assert len(resp.json()["data"][0]["embedding"]) == 384

        embed_on_fresh_connections(6)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: victim not in _children(supervisor))
        embed_on_fresh_connections(4)  # the other worker serves meanwhile
        _wait_for(lambda: len(_children(supervisor)) == 2)
        assert _children(supervisor) - workers  # a new worker replaced the dead one
        _wait_ready(url, proxy)
        embed_on_fresh_connections(4)
        last = _children(supervisor)
        logs = proxy.stop()
        assert "worker 0 exited" in logs or "worker 1 exited" in logs, logs
        assert proxy.proc.returncode == 0, logs
        _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in last))
    finally:
        if proxy is not None:
            proxy.stop()
        backend.stop()
