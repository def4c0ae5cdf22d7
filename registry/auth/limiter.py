"""Failed-login limits: after too many failures for one user from one address, answer 429 a while."""

from __future__ import annotations

import time


class LoginLimiter:
    """At most `attempts` failures per (user, address) within `window_s` seconds; in-process."""

    def __init__(self, attempts: int = 5, window_s: float = 60.0):
        self.attempts, self.window_s = attempts, window_s
        self._failures: dict[tuple[str, str], list[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        times = [t for t in self._failures.get(key, ()) if t > now - self.window_s]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def retry_after(self, user: str, address: str) -> int:
        """Seconds until `user` may try again from `address`; 0 when they may now."""
        now = time.monotonic()
        times = self._recent((user, address), now)
        if len(times) < self.attempts:
            return 0
        return max(1, int(times[0] + self.window_s - now + 1))

    def failed(self, user: str, address: str) -> None:
        now = time.monotonic()
        if len(self._failures) > 100_000:
            self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > now - self.window_s}
        self._failures.setdefault((user, address), []).append(now)

    def succeeded(self, user: str, address: str) -> None:
        self._failures.pop((user, address), None)
