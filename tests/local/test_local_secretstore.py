"""The backend's secret store: time to live, injectable clock, capacity, no key in its repr."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from localbackend_helpers import ManualClock
from privatemode_proxy.local import SecretStore


def test_secret_expires_after_ttl() -> None:
    clock = ManualClock()
    store = SecretStore(timedelta(minutes=60), clock=clock)
    assert store.ttl == 3600
    store.put("id-a", b"k" * 32)
    clock.now += 3599.0
    assert store.get("id-a") == b"k" * 32
    clock.now += 1.0
    assert store.get("id-a") is None
    assert len(store) == 0


def test_unknown_id_and_overwrite_renews() -> None:
    clock = ManualClock()
    store = SecretStore(10, clock=clock)
    assert store.get("nope") is None
    store.put("id", b"1" * 32)
    clock.now += 8
    store.put("id", b"2" * 32)
    clock.now += 8
    assert store.get("id") == b"2" * 32
    assert "id" in store and "nope" not in store


def test_expired_entries_are_purged_on_put() -> None:
    clock = ManualClock()
    store = SecretStore(5, clock=clock)
    for i in range(100):
        store.put(f"old-{i}", bytes(32))
    clock.now += 6
    store.put("new", bytes(32))
    assert len(store) == 1


def test_capacity_drops_oldest_first() -> None:
    store = SecretStore(60, clock=ManualClock(), max_secrets=3)
    for name in ("a", "b", "c", "d"):
        store.put(name, bytes(32))
    assert store.get("a") is None
    assert [store.get(n) is not None for n in ("b", "c", "d")] == [True, True, True]


def test_repr_shows_no_keys_or_ids() -> None:
    store = SecretStore(60)
    store.put("secret-id-xyz", b"\xaa" * 32)
    text = repr(store)
    assert "aa" not in text.lower().replace("ttl", "") and "xyz" not in text
    assert "1 secrets" in text


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SecretStore(0)
    with pytest.raises(ValueError, match="positive"):
        SecretStore(timedelta(seconds=-1))


def test_concurrent_puts_and_gets() -> None:
    store = SecretStore(60)
    errors: list[str] = []

    def worker(n: int) -> None:
        for i in range(500):
            key = bytes([n]) * 32
            store.put(f"{n}-{i}", key)
            if store.get(f"{n}-{i}") != key:
                errors.append(f"{n}-{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store) == 8 * 500
