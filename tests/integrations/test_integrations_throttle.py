"""The client's 429 throttle: nothing changes until a 429; after one, wait, then one at a time."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from privatemode_integrations._throttle import Throttle


def _max_inside(throttle: Throttle, workers: int) -> int:
    inside = 0
    most = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal inside, most
        with throttle.turn(time.sleep):
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return most


def _all_inside_together(throttle: Throttle, workers: int) -> bool:
    barrier = threading.Barrier(workers, timeout=10)  # breaks unless all are inside at once

    def work() -> None:
        with throttle.turn(time.sleep):
            barrier.wait()

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return not barrier.broken


def test_without_a_429_requests_go_together() -> None:
    throttle = Throttle()
    assert not throttle.serial
    assert _all_inside_together(throttle, 4)


def test_after_a_429_requests_go_one_at_a_time() -> None:
    throttle = Throttle()
    throttle.refused(0.0)
    assert throttle.serial
    assert _max_inside(throttle, 4) == 1


def test_after_a_429_the_next_request_waits_the_servers_time() -> None:
    throttle = Throttle()
    throttle.refused(0.3)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    with throttle.turn(sleep):
        pass
    assert waits and 0 < waits[0] <= 0.3


def test_an_abort_while_waiting_propagates() -> None:
    throttle = Throttle()
    throttle.refused(30.0)

    def give_up(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), throttle.turn(give_up):
        pytest.fail("entered a turn the throttle should have held")


def test_serial_mode_ends() -> None:
    throttle = Throttle(serial_seconds=0.0)
    throttle.refused(0.0)
    time.sleep(0.01)
    assert not throttle.serial
    assert _all_inside_together(throttle, 3)


async def test_async_after_a_429_one_at_a_time() -> None:
    throttle = Throttle()
    throttle.refused(0.0)
    serial = asyncio.Lock()
    inside = 0
    most = 0

    async def work() -> None:
        nonlocal inside, most
        async with throttle.aturn(serial):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.02)
            inside -= 1

    await asyncio.gather(*(work() for _ in range(4)))
    assert most == 1


def test_a_refused_request_keeps_its_turn_through_its_retry() -> None:
    throttle = Throttle()
    throttle.refused(0.0)
    throttle.keep_turn(time.sleep)
    entered = threading.Event()

    def other() -> None:
        with throttle.turn(time.sleep):
            entered.set()

    thread = threading.Thread(target=other)
    thread.start()
    with throttle.turn(time.sleep, holding=True):  # the holder's retry goes without queueing
        assert not entered.wait(0.2)  # the other request waits for the turn
    throttle.release_turn()
    thread.join(timeout=10)
    assert entered.is_set()
