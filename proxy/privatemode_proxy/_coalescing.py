"""Coalescing: small client requests that arrive together go upstream as one request.

Under a requests-per-minute limit (Privatemode's standard tier: 20), one query per user per
request spends the whole budget on a handful of users. The proxy instead packs small requests
for the same upstream key, model, `dimensions` and extra fields into one upstream request (up to
the model's limits) and splits the answer back: each client gets exactly its vectors, in order,
and its own share of `usage`.

A pack stays open for `window_seconds` after its first request; under pacing it stays open for
as long as its key's budget has no room for it anyway, so that while requests queue they ride
together instead of each waiting for a slot of its own. Each client request is validated on its
own before it joins (the caller does that), and if the upstream still refuses a pack as a bad
request, every member is sent again on its own: one client's bad input never fails another's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privatemode_proxy.openai import FloatMatrix

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoalescingConfig:
    """Which requests are packed, and for how long a pack waits for company."""

    window_seconds: float = 0.02
    """How long a pack stays open after its first request (longer under pacing, see above)."""
    max_inputs_per_client: int = 256
    """Requests with more inputs than this, or more than half a pack's tokens, go upstream on
    their own (they fill requests well). Below it, a client's concurrent requests (a progress
    bar makes ~50 of one call) share upstream requests."""
    max_inputs: int = 2048
    """Most inputs in one pack (the model's per-request limit is applied too)."""
    max_tokens: int = 100_000
    """Most (estimated) tokens in one pack (the model's and the key's limits are applied too)."""
    max_open_packs: int = 1024
    """Packs forming at once; past it, requests go upstream on their own."""

    def __post_init__(self) -> None:
        if self.window_seconds < 0:
            raise ValueError(f"window_seconds must be >= 0, got {self.window_seconds}")
        for name in ("max_inputs_per_client", "max_inputs", "max_tokens", "max_open_packs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


DEFAULT_WINDOW_MS = 20


def coalescing_for(window_ms: int | None, *, paced: bool) -> CoalescingConfig | None:
    """The CLI's choice: as `--coalesceWindowMs` says (0: off); by default on when paced."""
    if window_ms is None:
        window_ms = DEFAULT_WINDOW_MS if paced else 0
    return CoalescingConfig(window_seconds=window_ms / 1000) if window_ms > 0 else None


@dataclass(frozen=True)
class PackAnswer:
    """What the upstream answered for a pack (or for one member sent alone)."""

    vectors: FloatMatrix
    prompt_tokens: int | None
    total_tokens: int | None
    model: str
    extra: dict[str, Any] = field(default_factory=dict)
    """Other top-level fields of the answer (`id`, `created`), given to every member."""


@dataclass(frozen=True)
class MemberAnswer:
    """One client's share of a pack's answer."""

    vectors: FloatMatrix
    prompt_tokens: int
    total_tokens: int
    model: str
    extra: dict[str, Any]
    pack_size: int
    """How many client requests shared the upstream request."""


RunPack = Callable[[list[str], float], Awaitable[PackAnswer]]
"""Sends texts upstream (split and paced as any request) before a deadline; raises on failure."""
RoomAt = Callable[[int], float]
"""When the key's budget would have room for a request of this many tokens (monotonic time)."""
IsInputError = Callable[[BaseException], bool]
"""Whether a failure blames the inputs (then each member is tried alone)."""


@dataclass
class _Member:
    texts: list[str]
    tokens: list[int]
    deadline: float
    future: asyncio.Future[MemberAnswer]


@dataclass
class _Pack:
    key: Hashable
    max_inputs: int
    max_tokens: int
    members: list[_Member] = field(default_factory=list)
    inputs: int = 0
    tokens: int = 0
    closed: bool = False
    full: asyncio.Event = field(default_factory=asyncio.Event)

    def fits(self, inputs: int, tokens: int) -> bool:
        return self.inputs + inputs <= self.max_inputs and self.tokens + tokens <= self.max_tokens

    def add(self, member: _Member) -> None:
        self.members.append(member)
        self.inputs += len(member.texts)
        self.tokens += sum(member.tokens)
        if self.inputs >= self.max_inputs or self.tokens >= self.max_tokens:
            self.full.set()


@dataclass
class CoalescingStats:
    packs: int = 0
    members: int = 0
    fallbacks: int = 0


class Coalescer:
    """Forms packs per key and sends each as one upstream request. Use on one event loop."""

    def __init__(self, config: CoalescingConfig) -> None:
        self.config = config
        self._open: dict[Hashable, _Pack] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = CoalescingStats()

    def __repr__(self) -> str:
        return f"Coalescer(open={len(self._open)}, packs={self.stats.packs})"

    def accepts(self, inputs: int) -> bool:
        return inputs <= self.config.max_inputs_per_client and (
            len(self._open) < self.config.max_open_packs
        )

    async def submit(
        self,
        key: Hashable,
        texts: list[str],
        tokens: list[int],
        *,
        deadline: float,
        run: RunPack,
        is_input_error: IsInputError,
        max_inputs: int,
        max_tokens: int,
        room_at: RoomAt | None = None,
    ) -> MemberAnswer:
        """Join (or open) the pack for `key` and wait for this request's share of its answer.

        `max_inputs`/`max_tokens` are the model's and key's limits for one upstream request;
        `room_at` is the key's pacing (None: not paced).
        """
        inputs, weight = len(texts), sum(tokens)
        loop = asyncio.get_running_loop()
        member = _Member(texts, tokens, deadline, loop.create_future())
        pack = self._open.get(key)
        if pack is not None and not pack.fits(inputs, weight):
            pack.full.set()  # send it now; this request starts the next one
            self._open.pop(key, None)
            pack = None
        if pack is None:
            pack = _Pack(
                key,
                min(max_inputs, self.config.max_inputs),
                min(max_tokens, self.config.max_tokens),
            )
            self._open[key] = pack
            task = loop.create_task(self._send_when_ready(pack, run, is_input_error, room_at))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        pack.add(member)
        if pack.full.is_set():
            self._open.pop(key, None)
        return await asyncio.shield(member.future)

    async def _send_when_ready(
        self,
        pack: _Pack,
        run: RunPack,
        is_input_error: IsInputError,
        room_at: RoomAt | None,
    ) -> None:
        try:
            await self._wait_for_company(pack, room_at)
        finally:
            pack.closed = True
            if self._open.get(pack.key) is pack:
                del self._open[pack.key]
        self.stats.packs += 1
        self.stats.members += len(pack.members)
        texts = [t for m in pack.members for t in m.texts]
        deadline = min(m.deadline for m in pack.members)
        try:
            answer = await run(texts, deadline)
        except Exception as exc:
            if len(pack.members) > 1 and is_input_error(exc):
                self.stats.fallbacks += 1
                logger.info("a pack of %d requests was refused; each goes alone", len(pack.members))
                await asyncio.gather(*(self._alone(m, run) for m in pack.members))
            else:
                for m in pack.members:
                    _fail(m, exc)
            return
        except BaseException as exc:
            for m in pack.members:
                _fail(m, exc)
            raise
        for m, share in zip(pack.members, split_answer(answer, pack.members), strict=True):
            if not m.future.done():
                m.future.set_result(share)

    async def _wait_for_company(self, pack: _Pack, room_at: RoomAt | None) -> None:
        """Keep the pack open for the window, and under pacing until its key has room."""
        try:
            await asyncio.wait_for(pack.full.wait(), self.config.window_seconds)
            return
        except TimeoutError:
            pass
        if room_at is None:
            return
        while not pack.full.is_set():
            # Never past what the most impatient member can wait: it must still get its turn.
            until = min(room_at(pack.tokens), min(m.deadline for m in pack.members))
            now = time.monotonic()  # after `room_at`, whose answer is at least its own now
            if until <= now:
                return
            try:
                await asyncio.wait_for(pack.full.wait(), min(until - now, 0.25))
            except TimeoutError:
                continue

    async def _alone(self, member: _Member, run: RunPack) -> None:
        try:
            answer = await run(member.texts, member.deadline)
        except Exception as exc:
            _fail(member, exc)
            return
        (share,) = split_answer(answer, [member])
        if not member.future.done():
            member.future.set_result(share)


def _fail(member: _Member, exc: BaseException) -> None:
    if not member.future.done():
        member.future.set_exception(exc)
        member.future.exception()  # retrieved: a client that left logs nothing


def split_answer(answer: PackAnswer, members: Sequence[_Member]) -> list[MemberAnswer]:
    """Each member's rows of the pack's vectors and its share of `usage` (shares sum to the
    upstream's counts exactly; weighted by the members' token counts)."""
    weights = [sum(m.tokens) for m in members]
    prompts = apportion(answer.prompt_tokens, weights)
    totals = apportion(
        answer.total_tokens if answer.total_tokens is not None else answer.prompt_tokens, weights
    )
    out: list[MemberAnswer] = []
    row = 0
    for m, prompt, total in zip(members, prompts, totals, strict=True):
        n = len(m.texts)
        vectors = np.ascontiguousarray(answer.vectors[row : row + n])
        out.append(MemberAnswer(vectors, prompt, total, answer.model, answer.extra, len(members)))
        row += n
    return out


def apportion(total: int | None, weights: Sequence[int]) -> list[int]:
    """`total` split in proportion to `weights`, in integers that sum to `total` exactly
    (largest remainder). Without a total, the weights themselves."""
    if total is None:
        return list(weights)
    whole = sum(weights)
    if whole <= 0:
        shares = [total // len(weights)] * len(weights)
        shares[0] += total - sum(shares)
        return shares
    exact = [total * w / whole for w in weights]
    shares = [int(x) for x in exact]
    rest = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[:rest]:
        shares[i] += 1
    return shares
