"""Defaults and environment variables shared by the client core and both framework classes."""

from __future__ import annotations

import os

from privatemode_proxy._catalogue import DEFAULT_REMOTE_MODEL_ID, LOCAL_MODEL_ID

BASE_URL_ENV = "PRIVATEMODE_BASE_URL"
API_KEY_ENV = "PRIVATEMODE_API_KEY"

DEFAULT_BASE_URL = "http://localhost:8080/v1"
"""Where the Privatemode proxy listens by default (`privatemode-proxy` on port 8080)."""

DEFAULT_MODEL = DEFAULT_REMOTE_MODEL_ID
"""The real Privatemode service's embedding model."""

LOCAL_MODEL = LOCAL_MODEL_ID
"""The model the bundled local backend serves; used only when local mode is asked for."""

DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_MAX_RETRIES = 2
DEFAULT_TIMEOUT = 600.0
"""Seconds per HTTP attempt (OpenAI's SDK waits as long). A pacing proxy queues requests to keep
within the service's rate limit, and refuses at once (429, Retry-After) one that would wait
longer than this: at the standard tier a long ingestion's requests queue for minutes."""
CONNECT_TIMEOUT = 10.0
"""Seconds to connect, at most (a proxy that is down is known at once)."""

LLAMAINDEX_DEFAULT_BATCH_SIZE = 2048
"""LlamaIndex hands this many texts to the client at once (its own upper bound); the client then
packs them into as few requests as the model's limits allow."""


def env_base_url() -> str:
    """`PRIVATEMODE_BASE_URL` when set and not empty, else the default proxy URL."""
    return os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL


def env_api_key() -> str | None:
    """`PRIVATEMODE_API_KEY` when set and not empty."""
    return os.environ.get(API_KEY_ENV) or None
