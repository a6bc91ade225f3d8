"""Fixtures for the framework classes' tests.

`local_stack` (the real proxy + local backend + model) comes from tests/conftest.py. The
`ScriptedOpenAIServer` here is only for what the real stack can't be made to do on cue:
429/503/400 answers and holding requests open to count concurrency.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scripted_server import ScriptedOpenAIServer

"""Backoff without a server's Retry-After shrunk so retry tests take milliseconds."""


@pytest.fixture(scope="session")
def scripted_server_session() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as server:
        yield server


@pytest.fixture
def scripted(scripted_server_session: ScriptedOpenAIServer) -> Iterator[ScriptedOpenAIServer]:
    """The scripted test server, reset: no queued answers, no records, no delay."""
    scripted_server_session.reset()
    yield scripted_server_session
    scripted_server_session.reset()
