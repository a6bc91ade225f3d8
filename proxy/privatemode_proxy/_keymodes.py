"""Which API key serves a request, and a name for it that is safe to log.

Two modes, as the official Privatemode proxy: started with `--apiKey`, the proxy uses that key
for everything and overwrites whatever an app sends; started without, each request is served
with the app's own `Authorization: Bearer <key>` (Privatemode's "using multiple API keys": one
proxy, each team with its own key). Secrets are exchanged per key (see `_session`), so one
app's key is never used for another app's requests.

An `ApiKey` carries the key and an `id`: a keyed hash, random per process, that names the key
in logs, status pages and per-key bookkeeping (rate limits, secrets) without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Literal

_ID_SALT = secrets.token_bytes(32)
"""Per process: an id can't be matched against a key list offline or across restarts."""

KeySource = Literal["proxy", "app"]


def key_id(key: str) -> str:
    """A stable (within this process), non-secret name for `key`."""
    digest = hmac.new(_ID_SALT, key.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"key-{digest[:16]}"


@dataclass(frozen=True, eq=False)
class ApiKey:
    """An API key and its non-secret `id`. The key is never part of a repr or str."""

    value: str = field(repr=False)
    source: KeySource
    """`proxy`: the proxy's `--apiKey`; `app`: the `Authorization` header of one request."""
    id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", key_id(self.value))

    def __repr__(self) -> str:
        return f"ApiKey(id={self.id!r}, source={self.source!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and hmac.compare_digest(
            self.value.encode("utf-8"), other.value.encode("utf-8")
        )

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("an ApiKey is not to be pickled")

    @property
    def authorization(self) -> str:
        """The `Authorization` header value."""
        return f"Bearer {self.value}"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
