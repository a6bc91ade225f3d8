"""Fixtures of the reliability suite: a backend of its own, reference vectors, relays.

The backend shares the identity (AMD-like chain, mesh CA) and the model engine of the session's
`local_stack`, so nothing slow is made twice, but it has its own port, secrets and request log:
the faults here (restarts, forgotten secrets) never disturb other tests.

Tests marked `slow` run only with RELIABILITY_SLOW=1 (CI keeps to the quick ones).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from privatemode_proxy import LocalStack
from privatemode_proxy.local import LocalBackend
from reliability_relay import FaultRelay
from reliability_support import TEXTS, Reference


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("RELIABILITY_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set RELIABILITY_SLOW=1 to run")
    here = Path(__file__).parent
    for item in items:
        if "slow" in item.keywords and Path(str(item.fspath)).parent == here:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def rel_backend(
    local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalBackend]:
    shared = local_stack.backend
    backend = LocalBackend(
        tmp_path_factory.mktemp("reliability-backend"),
        identity=shared.identity,
        engine=shared.engine,
    )
    backend.start()
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture()
def backend(rel_backend: LocalBackend) -> Iterator[LocalBackend]:
    """The reliability backend, running again after the test if the test stopped it."""
    yield rel_backend
    rel_backend.start()


@pytest.fixture(scope="session")
def reference(local_stack: LocalStack) -> Reference:
    return Reference(local_stack.backend.engine, TEXTS)


@pytest.fixture()
def relay(rel_backend: LocalBackend) -> Iterator[FaultRelay]:
    with FaultRelay(rel_backend.url, backend=rel_backend) as running:
        yield running
    assert running.action_errors == [], "a scripted relay action failed"
