"""Failed-login limits."""

from __future__ import annotations

from registry.auth.limiter import LoginLimiter


def test_limit_applies_per_user_and_address_and_resets_on_success() -> None:
    limiter = LoginLimiter(attempts=3, window_s=60)
    for _ in range(3):
        assert limiter.retry_after("alice", "1.2.3.4") == 0
        limiter.failed("alice", "1.2.3.4")
    assert 0 < limiter.retry_after("alice", "1.2.3.4") <= 61
    assert limiter.retry_after("alice", "5.6.7.8") == 0
    assert limiter.retry_after("bob", "1.2.3.4") == 0
    limiter.succeeded("alice", "1.2.3.4")
    assert limiter.retry_after("alice", "1.2.3.4") == 0


def test_failures_expire_after_the_window() -> None:
    limiter = LoginLimiter(attempts=1, window_s=0.0)
    limiter.failed("alice", "a")
    assert limiter.retry_after("alice", "a") == 0
