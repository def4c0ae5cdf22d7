"""Failed-login limits kept in the index (SQLite and PostgreSQL), shared by every limiter on it."""

from __future__ import annotations

import asyncio

import pytest

from registry.auth.limiter import LoginLimiter
from registry.errors import TooManyRequests
from storage.metadata import Limits, Metadata

pytestmark = pytest.mark.anyio

LIMITS = Limits(per_pair=3, per_address=5, per_user=7, window_s=60)


async def attempts(limiter: LoginLimiter, user: str, address: str, n: int) -> list[bool]:
    """Reserve `n` attempts one after another (none released): which were allowed."""
    allowed = []
    for _ in range(n):
        try:
            await limiter.reserve(user, address)
            allowed.append(True)
        except TooManyRequests as e:
            assert 0 < int(e.headers["Retry-After"]) <= 61
            allowed.append(False)
    return allowed


async def test_limit_applies_per_user_and_address_and_success_clears_it(metadata: Metadata) -> None:
    limiter = LoginLimiter(metadata.logins, LIMITS)
    assert await attempts(limiter, "alice", "1.2.3.4", 4) == [True] * 3 + [False]
    assert await attempts(limiter, "alice", "5.6.7.8", 1) == [True]
    assert await attempts(limiter, "bob", "1.2.3.4", 1) == [True]
    other = LoginLimiter(metadata.logins, LIMITS)  # another worker on the same index
    assert await attempts(other, "alice", "1.2.3.4", 1) == [False]
    attempt = await other.reserve("alice", "9.9.9.9")
    await other.succeeded(attempt, "alice", "9.9.9.9")
    assert await attempts(limiter, "alice", "1.2.3.4", 1) == [False]  # success elsewhere clears nothing here


async def test_a_success_releases_its_reservation_and_the_pairs_failures(metadata: Metadata) -> None:
    limiter = LoginLimiter(metadata.logins, LIMITS)
    assert await attempts(limiter, "alice", "a", 2) == [True, True]
    attempt = await limiter.reserve("alice", "a")
    await limiter.succeeded(attempt, "alice", "a")
    assert await attempts(limiter, "alice", "a", 4) == [True] * 3 + [False]


async def test_an_abandoned_attempt_does_not_count(metadata: Metadata) -> None:
    limiter = LoginLimiter(metadata.logins, LIMITS)
    for _ in range(5):
        await limiter.abandoned(await limiter.reserve("alice", "a"))
    assert await attempts(limiter, "alice", "a", 4) == [True] * 3 + [False]


async def test_parallel_attempts_never_pass_the_limit(metadata: Metadata) -> None:
    limiters = [LoginLimiter(metadata.logins, LIMITS) for _ in range(2)]
    outcomes = await asyncio.gather(*(limiters[i % 2].reserve("alice", "a") for i in range(40)), return_exceptions=True)
    assert sum(isinstance(o, str) for o in outcomes) == 3
    assert all(isinstance(o, str | TooManyRequests) for o in outcomes)


async def test_one_address_spraying_many_users_is_limited(metadata: Metadata) -> None:
    limiter = LoginLimiter(metadata.logins, LIMITS)
    allowed = [(await attempts(limiter, f"user{i}", "a", 1))[0] for i in range(7)]
    assert allowed == [True] * 5 + [False] * 2
    assert await attempts(limiter, "user6", "b", 1) == [True]


async def test_a_user_is_locked_for_everyone_only_by_several_addresses(metadata: Metadata) -> None:
    limiter = LoginLimiter(metadata.logins, LIMITS)
    await attempts(limiter, "alice", "a", 10)  # counts 3 towards alice, whatever it tries
    assert await attempts(limiter, "alice", "b", 3) == [True] * 3
    assert await attempts(limiter, "alice", "c", 2) == [True, False]  # 3 + 3 + 1 = 7
    assert await attempts(limiter, "alice", "d", 1) == [False]
    assert await attempts(limiter, "bob", "d", 1) == [True]


async def test_failures_leave_the_window(metadata: Metadata) -> None:
    limiter = LoginLimiter(metadata.logins, Limits(per_pair=1, per_address=5, per_user=7, window_s=0.2))
    assert await attempts(limiter, "alice", "a", 2) == [True, False]
    await asyncio.sleep(0.3)
    assert await attempts(limiter, "alice", "a", 1) == [True]


@pytest.mark.parametrize(
    ("user", "address"), [("ali\x00ce", "10.0.0.1"), ("alice", "\x00junk"), ("u" * 10_000, "a" * 10_000)]
)
async def test_names_and_addresses_the_index_cannot_hold_are_limited_all_the_same(
    metadata: Metadata, user: str, address: str
) -> None:
    limiter = LoginLimiter(metadata.logins, LIMITS)
    assert await attempts(limiter, user, address, 4) == [True, True, True, False]
    assert await attempts(limiter, "alice", "10.0.0.9", 1) == [True]
