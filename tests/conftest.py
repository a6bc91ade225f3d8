"""Shared test configuration: where the public test vectors live."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from privatemode_proxy import LocalStack

REPO_ROOT = Path(__file__).resolve().parent.parent

# `.local()` in this process keeps its identity in the per-user cache: give the test session its
# own, so tests neither read nor write the user's ~/.cache/privatemode (nor race another run on
# the same machine there). Tests of the cache's location set their own in a subprocess.
if "PRIVATEMODE_CACHE_DIR" not in os.environ:
    _SESSION_CACHE = tempfile.mkdtemp(prefix="privatemode-test-cache-")
    os.environ["PRIVATEMODE_CACHE_DIR"] = _SESSION_CACHE
    atexit.register(shutil.rmtree, _SESSION_CACHE, True)
# The public vectors live beside the checkout in ../shared/vectors; a clone elsewhere finds them
# through PRIVATEMODE_SHARED_VECTORS or the workplace's fixed location.
_CANDIDATES = [
    Path(p)
    for p in (
        os.environ.get("PRIVATEMODE_SHARED_VECTORS", ""),
        str(REPO_ROOT.parent / "shared" / "vectors"),
        "/work/shared/vectors",
    )
    if p
]
SHARED_VECTORS = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    if not SHARED_VECTORS.is_dir():
        pytest.fail(f"test vectors not found at {SHARED_VECTORS}; set PRIVATEMODE_SHARED_VECTORS")
    return SHARED_VECTORS


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The local backend and the proxy, in-process on free ports, shared by a test session.

    The proxy trusts the backend's own root and pins its manifest; `local_stack.base_url` is
    what an OpenAI client takes. Tests that change the stack's state must restore it.
    """
    from privatemode_proxy import LocalStack

    stack = LocalStack(tmp_path_factory.mktemp("local-stack"))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_local_mode_stack() -> Iterator[None]:
    """Stop the local-mode stack that `.local()` classes share, while pytest still captures output.

    It would otherwise stop at interpreter exit, when its servers' shutdown logging finds the
    captured streams already closed.
    """
    yield
    from privatemode_integrations._local import stop_local_stack

    stop_local_stack()
