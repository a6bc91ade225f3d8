"""The upstream session's secret lifecycle: state, exchange, renewal, refresher.

One slot per API key (the proxy's `--apiKey`, or each app's key on a keyless proxy, least recently
used forgotten past `max_api_keys`) holds the key's secret and the exchange that renews it: never
two exchanges at a time per key, concurrent callers share one, a secret is replaced
`secret_refresh_ahead_seconds` before its use ends, and after `no secret for ID` only a secret from
an exchange started later is trusted (protocol §5). How a secret is obtained (attestation and the
HTTP exchange) is `UpstreamSession`'s, passed in as `obtain`; nothing here talks to the network.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from privatemode_proxy._exceptions import UpstreamAuthError, UpstreamUnavailable
from privatemode_proxy._keymodes import ApiKey
from privatemode_proxy.protocol import Secret

if TYPE_CHECKING:
    from privatemode_proxy._session import SessionConfig

logger = logging.getLogger("privatemode_proxy._session")


@dataclass(frozen=True)
class SecretState:
    secret: Secret
    exchange_serial: int
    """Which exchange (counted from 1, in the order they started) produced this secret."""
    obtained_at: datetime
    use_until_wall: datetime
    use_until: float  # time.monotonic()
    refresh_at: float  # time.monotonic()


class SecretSlot:
    """The secret of one API key (or of no key) and the exchanges that renew it.

    The key itself is not kept here: an exchange gets it from the request that needs the
    exchange (or, for the proxy's own key, from the config), and holds it only while it runs.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        """`proxy key`, `no key`, or an `ApiKey.id`: safe to log."""
        self.state: SecretState | None = None
        self.exchange_task: asyncio.Task[SecretState] | None = None
        self.exchanges_started = 0  # serial of the latest exchange task
        self.first_trusted_serial = 1
        """Secrets from exchanges that started earlier may be lost upstream: a `no secret for ID`
        answer arrived after those exchanges began (protocol §5: force a new exchange)."""
        self.exchanges = 0
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.last_failure: float | None = None  # time.monotonic() of the last failed exchange
        self.refused = False
        """The API refused this slot's key (401/403) at the last exchange."""

    def __repr__(self) -> str:
        return f"SecretSlot({self.name!r})"

    def usable(self, state: SecretState, now: float) -> bool:
        return now < state.use_until and state.exchange_serial >= self.first_trusted_serial

    @property
    def ready(self) -> bool:
        state = self.state
        return state is not None and self.usable(state, time.monotonic())

    @property
    def busy(self) -> bool:
        task = self.exchange_task
        return task is not None and not task.done()


class SecretKeeper:
    """The secrets of one upstream, by API key; `obtain(key)` attests and exchanges one."""

    def __init__(
        self,
        config: SessionConfig,
        proxy_key: ApiKey | None,
        obtain: Callable[[ApiKey | None], Awaitable[Secret]],
    ) -> None:
        self.config = config
        self.proxy_key = proxy_key
        self._obtain = obtain
        self.default = SecretSlot("proxy key" if proxy_key else "no key")
        """The slot of the proxy's key, or (keyless proxy) of requests that carry no key."""
        self.app_slots: OrderedDict[str, SecretSlot] = OrderedDict()
        """Keyless proxy: one slot per app key id, least recently used first."""
        self._refresher: asyncio.Task[None] | None = None

    @property
    def uses_app_keys(self) -> bool:
        return self.proxy_key is None

    def start_refresher(self) -> None:
        self._refresher = asyncio.create_task(self._keep_fresh(), name="secret-refresh")

    async def aclose(self) -> None:
        """Cancel the refresher and every exchange in flight."""
        tasks: list[asyncio.Task[Any]] = [t for t in (self._refresher,) if t is not None]
        tasks += [s.exchange_task for s in self.slots() if s.exchange_task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: S110 - shutting down
                pass
        self._refresher = None
        for slot in self.slots():
            slot.exchange_task = None

    def slot_for(self, key: ApiKey | None) -> SecretSlot:
        if key is None or key.source == "proxy" or self.proxy_key is not None:
            return self.default
        slot = self.app_slots.get(key.id)
        if slot is None:
            slot = SecretSlot(key.id)
            self.app_slots[key.id] = slot
            self._forget_idle_slots()
        else:
            self.app_slots.move_to_end(key.id)
        return slot

    def _forget_idle_slots(self) -> None:
        excess = len(self.app_slots) - self.config.max_api_keys
        if excess <= 0:
            return
        for name in [n for n, s in self.app_slots.items() if not s.busy][:excess]:
            del self.app_slots[name]

    def slots(self) -> list[SecretSlot]:
        return [self.default, *self.app_slots.values()]

    @property
    def ready(self) -> bool:
        """Whether a verified secret is usable right now (for the proxy's key, or any app's)."""
        return any(slot.ready for slot in self.slots())

    @property
    def newest_state(self) -> SecretState | None:
        """The newest secret in use."""
        states = [s.state for s in self.slots() if s.state is not None]
        return max(states, key=lambda st: st.use_until) if states else None

    async def current_state(self, slot: SecretSlot, key: ApiKey | None) -> SecretState:
        state = slot.state
        now = time.monotonic()
        if state is not None and slot.usable(state, now):
            if now >= state.refresh_at and self._may_refresh(slot, now):
                self.exchange(slot, key)  # refresh in the background; this request keeps the old
            return state
        return await self.trusted_state(slot, key)

    async def renew_state(
        self, slot: SecretSlot, key: ApiKey | None, stale_id: str, stale_serial: int
    ) -> SecretState:
        """`stale_serial` is the serial of the exchange that produced the stale secret, or of
        a later one; every exchange up to the latest started is distrusted, unless an earlier
        failure already distrusted the stale secret (so one loss forces one exchange)."""
        if stale_serial >= slot.first_trusted_serial:
            slot.first_trusted_serial = slot.exchanges_started + 1
        state = slot.state
        if state is not None and (
            state.secret.id == stale_id or state.exchange_serial < slot.first_trusted_serial
        ):
            slot.state = None  # not to be handed out again
        return await self.trusted_state(slot, key)

    async def trusted_state(self, slot: SecretSlot, key: ApiKey | None) -> SecretState:
        """A usable secret from an exchange that started after the last `no secret for ID`.

        Waits for a suspect exchange in flight to end before starting the next one, so that
        there is never more than one exchange at a time per key; concurrent callers share it.
        """
        while True:
            state = slot.state
            if state is not None and slot.usable(state, time.monotonic()):
                return state
            task = slot.exchange_task
            if (
                task is not None
                and not task.done()
                and slot.exchanges_started < slot.first_trusted_serial
            ):
                await asyncio.wait([task])  # its outcome is of no use here; errors are logged
                continue
            state = await asyncio.shield(self.exchange(slot, key))
            if state.exchange_serial >= slot.first_trusted_serial:
                return state
            # Another `no secret for ID` arrived while this exchange ran: exchange again.

    def _may_refresh(self, slot: SecretSlot, now: float) -> bool:
        failed = slot.last_failure
        return failed is None or now - failed >= self.config.background_retry_seconds

    def exchange(self, slot: SecretSlot, key: ApiKey | None) -> asyncio.Task[SecretState]:
        """The slot's exchange in flight, or a new one with `key`: never two at a time."""
        task = slot.exchange_task
        if task is None or task.done():
            slot.exchanges_started += 1
            task = asyncio.create_task(
                self._obtain_state(slot, slot.exchanges_started, key), name="secret-exchange"
            )
            task.add_done_callback(lambda done: self._exchange_done(slot, done))
            slot.exchange_task = task
        return task

    def _exchange_done(self, slot: SecretSlot, task: asyncio.Task[SecretState]) -> None:
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here so a failure never goes unreported
        if exc is not None:
            slot.last_error = str(exc)
            slot.last_error_at = datetime.now(UTC)
            slot.last_failure = time.monotonic()
            slot.refused = isinstance(exc, UpstreamAuthError)
            if slot.refused and slot is self.default and self.uses_app_keys:
                logger.info(
                    "the API wants an API key: requests are served with each app's "
                    "'Authorization: Bearer <key>' (or start the proxy with --apiKey)"
                )
            elif slot is self.default:
                logger.error("upstream not usable: %s", exc)
            else:
                logger.warning("upstream not usable with app key %s: %s", slot.name, exc)
                if slot.refused and self.app_slots.get(slot.name) is slot:
                    del self.app_slots[slot.name]  # a refused key holds no memory

    async def _obtain_state(
        self, slot: SecretSlot, serial: int, key: ApiKey | None
    ) -> SecretState:
        secret = await self._obtain(key)
        cfg = self.config
        now, wall = time.monotonic(), datetime.now(UTC)
        state = SecretState(
            secret=secret,
            exchange_serial=serial,
            obtained_at=wall,
            use_until_wall=wall + timedelta(seconds=cfg.secret_use_seconds),
            use_until=now + cfg.secret_use_seconds,
            refresh_at=now + cfg.secret_use_seconds - cfg.secret_refresh_ahead_seconds,
        )
        slot.state = state
        slot.exchanges += 1
        slot.last_error = slot.last_error_at = slot.last_failure = None
        slot.refused = False
        logger.info("new secret (%s) in use until %s", slot.name, state.use_until_wall.isoformat())
        return state

    async def _keep_fresh(self) -> None:
        """Background: obtain the first secret of the proxy's key (or, keyless, of no key) and
        replace each one before its use ends. App keys are refreshed by their own requests."""
        slot, key = self.default, self.proxy_key
        backoff = self.config.background_retry_seconds
        while True:
            try:
                await self.current_state(slot, key)
                state = slot.state
                if state is None:
                    continue
                delay = state.refresh_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                await asyncio.shield(self.exchange(slot, key))
                backoff = self.config.background_retry_seconds
            except UpstreamAuthError:
                if self.uses_app_keys:
                    return  # the API wants keys: the apps' requests bring theirs
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 300.0)
            except UpstreamUnavailable:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 300.0)
            except Exception:
                logger.exception("secret refresher failed; trying again in %.0f s", backoff)
                await asyncio.sleep(backoff)
