"""Fixtures of the pacing tests: a rate-limited local backend and a pacing proxy in front of it.

The local backend's optional rate limit is the real limiter here (a sliding log per API key that
answers 429 with `Retry-After`), with windows of a second or two so the tests run fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pacing_helpers import PacedStack
from privatemode_proxy.local._engine import EmbeddingEngine, load_default_engine
from privatemode_proxy.local._issuer import LocalIdentity


@pytest.fixture(scope="session")
def pacing_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pacing-backend")


@pytest.fixture(scope="session")
def pacing_identity(pacing_workspace: Path) -> LocalIdentity:
    return LocalIdentity.load_or_create(pacing_workspace)


@pytest.fixture(scope="session")
def pacing_engine() -> EmbeddingEngine:
    return load_default_engine()


@pytest.fixture
def make_stack(
    pacing_workspace: Path, pacing_identity: LocalIdentity, pacing_engine: EmbeddingEngine
) -> Iterator[type[PacedStack]]:
    """`make_stack(backend_limit=..., rate_limits=...)` starts a stack, stopped after the test."""
    started: list[PacedStack] = []

    class _Factory(PacedStack):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(pacing_workspace, pacing_identity, pacing_engine, **kwargs)  # type: ignore[arg-type]
            started.append(self)
            self.start()

    yield _Factory
    for stack in started:
        stack.stop()
