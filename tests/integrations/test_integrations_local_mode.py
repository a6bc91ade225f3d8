"""Local mode as a user's process sees it: Ctrl-C, files, start-up (issue 14, items 5 and 11).

Each test runs a real Python process that uses `.local()`, as a user's script would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

_ASYNC_SCRIPT = textwrap.dedent(
    """
    import asyncio
    from privatemode_integrations import PrivatemodeEmbeddings

    embeddings = PrivatemodeEmbeddings.local(batch_size=64)
    print("ready", flush=True)
    texts = [f"some text about things and other things, number {i}" * 4 for i in range(6000)]
    asyncio.run(embeddings.aembed_documents(texts))
    print("done", flush=True)
    """
)


def _python(script: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user's process, with its own per-user cache directory."""
    env = dict(os.environ)
    env["PRIVATEMODE_CACHE_DIR"] = str(tmp_path / "cache")
    env.pop("PRIVATEMODE_BASE_URL", None)
    return env


def test_ctrl_c_during_local_embedding_logs_no_engine_errors(
    tmp_path: Path, user_env: dict[str, str]
) -> None:
    process = _python(_ASYNC_SCRIPT, tmp_path, user_env)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        time.sleep(1.5)  # let requests reach the engine (not a timing assertion)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "KeyboardInterrupt" in err  # it was interrupted mid-way, as intended
    for noise in ("engine failed", "batch failed", "failed: RuntimeError", "ERROR"):
        assert noise not in err, err
