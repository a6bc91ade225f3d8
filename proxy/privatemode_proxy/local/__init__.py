"""The local backend: the Privatemode server side with a real embedding model, offline.

`LocalBackend` runs it in-process on a free port (tests, notebooks, the proxy's local mode);
`run_local_backend` serves it in the foreground (`privatemode-proxy local-backend`);
`create_app` gives the ASGI app itself.
"""

from ._app import BackendLimits, LocalBackend, create_app, run_local_backend
from ._ratelimit import RateLimit, RateLimiter
from ._requestlog import RequestLog
from ._secretstore import DEFAULT_SECRET_TTL, SecretStore

__all__ = [
    "DEFAULT_SECRET_TTL",
    "BackendLimits",
    "LocalBackend",
    "RateLimit",
    "RateLimiter",
    "RequestLog",
    "SecretStore",
    "create_app",
    "run_local_backend",
]
