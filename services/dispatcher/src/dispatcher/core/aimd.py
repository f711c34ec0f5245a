"""Adaptive concurrency towards one endpoint: additive increase, multiplicative decrease (pure)."""

from __future__ import annotations

from collections import deque


class AdaptiveLimit:
    """How many requests may be in flight to an endpoint, between 1 and its declared cap.

    The limit grows by 1 after every ``limit`` successes, which is one more request per round
    trip of the window, and halves on a 429. It halves at most once per window: each decrease
    starts a new epoch, ``acquire`` stamps a request with the epoch it was sent in, and a 429
    for a request sent before the last decrease is ignored, since that decrease already
    answered the overload the request saw.

    With a ``tolerance`` above 0, a 429 decreases only when 429s make more than that share of
    the last ``window`` responses: an endpoint that throttles a steady few percent of requests
    at random (a shared quota, a noisy gateway) is not overloaded by us, and halving on each
    of those would drive the limit to 1 or 2 (additive increase cannot keep up with random
    loss). The throttled requests are retried after their Retry-After either way.

    Usage, per request: when ``has_room()``, ``epoch = acquire()``; then ``on_success()`` or
    ``on_throttle(epoch)`` as the response says; always ``release()`` at the end.
    """

    def __init__(
        self, cap: int, start: int | None = None, tolerance: float = 0.0, window: int = 50
    ) -> None:
        """Starts at ``start``, or at ``cap`` (the endpoint's own declaration) when not given."""
        if not 0.0 <= tolerance < 1.0:
            raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if cap < 1:
            raise ValueError(f"cap must be at least 1, got {cap}")
        limit = cap if start is None else start
        if not 1 <= limit <= cap:
            raise ValueError(f"start must be between 1 and cap ({cap}), got {limit}")
        self._cap = cap
        self._limit = limit
        self._epoch = 0
        self._successes = 0
        self._in_flight = 0
        self._tolerance = tolerance
        self._recent: deque[bool] = deque(maxlen=window)  # True = throttled

    @property
    def cap(self) -> int:
        return self._cap

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def epoch(self) -> int:
        """Number of decreases so far; requests sent now carry it."""
        return self._epoch

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def has_room(self) -> bool:
        """Whether another request may be sent now."""
        return self._in_flight < self._limit

    def acquire(self) -> int:
        """Takes a slot for a request about to be sent; returns the epoch it is sent in."""
        if not self.has_room():
            raise RuntimeError(
                f"acquire() with {self._in_flight} requests in flight at limit {self._limit}"
            )
        self._in_flight += 1
        return self._epoch

    def release(self) -> None:
        """Frees the slot of a finished request, whatever its outcome."""
        if self._in_flight == 0:
            raise RuntimeError("release() without a request in flight")
        self._in_flight -= 1

    def on_success(self) -> None:
        """Additive increase: +1 after every ``limit`` successes, up to the cap."""
        self._recent.append(False)
        self._successes += 1
        if self._successes >= self._limit:
            self._successes = 0
            self._limit = min(self._cap, self._limit + 1)

    def on_throttle(self, epoch: int) -> bool:
        """Multiplicative decrease for a 429 to a request sent in ``epoch``.

        Returns:
            Whether the limit was decreased: False when an earlier 429 from the same window
            already did, or when 429s are within the tolerated share of recent responses.
        """
        if epoch > self._epoch:
            raise ValueError(f"epoch {epoch} was never handed out (current {self._epoch})")
        self._recent.append(True)
        if epoch < self._epoch:
            return False
        if sum(self._recent) <= self._tolerance * len(self._recent):
            return False
        self._limit = max(1, self._limit // 2)
        self._epoch += 1
        self._successes = 0
        return True
