"""Local mode: the bundled proxy and local backend, started once per process when asked for.

This is the only module of `privatemode_integrations` that imports the proxy's server side. It
runs only when the caller asks for local mode explicitly (`PrivatemodeEmbeddings.local()`,
`local=True`, `EmbeddingsClient.local()`); a missing or unreachable proxy is never replaced by
the local model behind the caller's back.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

logger = logging.getLogger("privatemode_integrations")

_lock = threading.Lock()
_stack: Any = None


def local_base_url() -> str:
    """The base URL (ending in /v1) of this process's local stack, starting it on first use.

    The stack (local backend + attesting proxy on free 127.0.0.1 ports) is shared by every
    local-mode client in the process and stopped when the interpreter exits.
    """
    global _stack
    with _lock:
        if _stack is None:
            from privatemode_proxy._stack import LocalStack

            stack = LocalStack()
            stack.start()
            atexit.register(_stop, stack)
            _stack = stack
            logger.warning(
                "privatemode local mode: embedding with the bundled local backend "
                "(all-minilm-l6-v2) through a proxy at %s, not the Privatemode service",
                stack.base_url,
            )
        return str(_stack.base_url)


def stop_local_stack() -> None:
    """Stop this process's local stack now, if one runs (it is otherwise stopped at exit)."""
    if _stack is not None:
        _stop(_stack)


def _stop(stack: Any) -> None:
    global _stack
    with _lock:
        if _stack is stack:
            _stack = None
    stack.stop()
