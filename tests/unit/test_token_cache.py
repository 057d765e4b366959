"""shared.access.TokenCache: an entry is served only while the token has not expired, the entry is young,
and the LISTEN connection that announces deletions is up; a deleted identity's entries go at once."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from shared.access import TokenCache
from shared.db.identities import Identity


def identity() -> Identity:
    return Identity(id=uuid.uuid4(), project_id=uuid.uuid4(), name="cached", role="issuer", client_id="c",
                    created_at=datetime.now(UTC))


def test_a_cached_token_is_served_until_its_expiry_and_not_after() -> None:
    cache = TokenCache(lambda: True)
    who = identity()
    cache.put(b"live", who, datetime.now(UTC) + timedelta(hours=1))
    cache.put(b"gone", who, datetime.now(UTC) - timedelta(seconds=1))
    assert cache.get(b"live") == who
    assert cache.get(b"gone") is None
    assert cache.get(b"never") is None


def test_an_entry_older_than_the_ttl_is_looked_up_again() -> None:
    cache = TokenCache(lambda: True, ttl_seconds=0.05)
    cache.put(b"t", identity(), datetime.now(UTC) + timedelta(hours=1))
    time.sleep(0.06)
    assert cache.get(b"t") is None


def test_nothing_is_cached_or_served_while_deletions_could_be_missed() -> None:
    listening = [True]
    cache = TokenCache(lambda: listening[0])
    who = identity()
    cache.put(b"t", who, datetime.now(UTC) + timedelta(hours=1))
    listening[0] = False
    assert cache.get(b"t") is None
    cache.put(b"u", who, datetime.now(UTC) + timedelta(hours=1))
    listening[0] = True
    assert cache.get(b"u") is None


def test_forgetting_an_identity_drops_every_token_of_it_and_no_other() -> None:
    cache = TokenCache(lambda: True)
    a, b = identity(), identity()
    later = datetime.now(UTC) + timedelta(hours=1)
    cache.put(b"a1", a, later)
    cache.put(b"a2", a, later)
    cache.put(b"b1", b, later)
    cache.forget_identity(a.id)
    assert cache.get(b"a1") is None and cache.get(b"a2") is None
    assert cache.get(b"b1") == b


def test_a_full_cache_starts_over_rather_than_growing() -> None:
    cache = TokenCache(lambda: True, max_entries=3)
    later = datetime.now(UTC) + timedelta(hours=1)
    for n in range(4):
        cache.put(bytes([n]), identity(), later)
    assert [cache.get(bytes([n])) is not None for n in range(4)] == [False, False, False, True]
