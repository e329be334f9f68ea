"""When the engine may ask the store about a flow it cannot place: a token bucket and a negative
cache, both on the caller's clock (time in, answer out).

A flood of packets that belong to no flow must not become a flood of store reads: look-ups are
bounded to ``rate`` per second (bursts up to a tenth of a second's worth, at least 10), and a key
the store did not know is not asked about again for ``negative_ttl`` seconds.
"""

from __future__ import annotations

from fwcluster.tokenbucket import TokenBucket

NEGATIVE_TTL = 0.5  # seconds a "not in the store" answer is trusted
NEGATIVE_MAX = 10_000  # keys remembered; the cache starts over beyond this


class LookupGate:
    __slots__ = (
        "_bucket",
        "_negative",
        "negative_cached",
        "negative_ttl",
        "rate_limited",
    )

    def __init__(self, rate: float, now: float, negative_ttl: float = NEGATIVE_TTL) -> None:
        self._bucket = TokenBucket(rate, max(10.0, rate / 10), now)
        self._negative: dict[bytes, float] = {}
        self.negative_ttl = negative_ttl
        self.negative_cached = 0  # look-ups skipped: the store did not know the key a moment ago
        self.rate_limited = 0  # look-ups skipped: over the rate

    def may(self, key: bytes, now: float) -> bool:
        """May the engine ask the store about ``key`` now? (Takes a token when it may.)"""
        until = self._negative.get(key)
        if until is not None:
            if until > now:
                self.negative_cached += 1
                return False
            del self._negative[key]
        if not self._bucket.take(now):
            self.rate_limited += 1
            return False
        return True

    def recently_unknown(self, key: bytes, now: float) -> bool:
        """Did the store answer that it does not know ``key`` within the negative TTL?"""
        until = self._negative.get(key)
        return until is not None and until > now

    def unknown(self, key: bytes, now: float) -> None:
        """The store did not know ``key``."""
        if len(self._negative) >= NEGATIVE_MAX:
            self._negative.clear()
        self._negative[key] = now + self.negative_ttl

    def known(self, key: bytes) -> None:
        """``key`` is known now (a record for it arrived)."""
        self._negative.pop(key, None)
