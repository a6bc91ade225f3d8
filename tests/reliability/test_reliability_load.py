"""Load, the CI variant: bench/load_test.py with 8 clients for a few seconds.

The script runs the local stack in a child process, drives it with concurrent clients (mixed
batch sizes, float and base64), rotates the secret twice during the run (the proxy's own refresh,
and the backend forgetting every secret at the middle) and checks every answer against the
engine's direct output. Here it must finish with no error, no wrong or partial answer, at least
two secret exchanges during the run and no memory growth after warm-up. The full run (32 clients,
30 s) is `python bench/load_test.py`; its figures are in RELIABILITY.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from privatemode_proxy import LocalStack

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "load_test.py"


def test_short_load_run_has_no_error_and_flat_memory(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    out = tmp_path / "load.json"
    command = [
        sys.executable,
        str(SCRIPT),
        "--clients", "8",
        "--seconds", "4",
        "--warmup", "2",
        "--corpus", "160",
        # the keys of the session's local identity: no new RSA-4096 keys in the child
        "--workspace", str(local_stack.backend.workspace),
        "--json", str(out),
        "--check",
        "--max-growth-mib", "64",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads(out.read_text())
    print(json.dumps(figures, indent=2))  # shown with -s; RELIABILITY.md has the full run
    assert figures["errors"] == 0 and figures["mismatches"] == 0
    assert figures["requests"] >= 5
    assert figures["secret_exchanges_during_run"] >= 2
    growth = figures["rss_last_quarter_mib"] - figures["rss_first_quarter_after_warmup_mib"]
    assert growth <= 64, figures


@pytest.mark.slow
def test_full_load_run(local_stack: LocalStack, tmp_path: Path) -> None:
    """The full run of RELIABILITY.md (32 clients, 30 s); RELIABILITY_SLOW=1 to run it."""
    out = tmp_path / "load.json"
    command = [
        sys.executable, str(SCRIPT),
        "--workspace", str(local_stack.backend.workspace),
        "--json", str(out), "--check",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    print(out.read_text())
