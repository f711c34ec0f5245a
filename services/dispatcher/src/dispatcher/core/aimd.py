"""Adaptive concurrency towards one endpoint: additive increase, multiplicative decrease (pure)."""

from __future__ import annotations


class AdaptiveLimit:
    """How many requests may be in flight to an endpoint, between 1 and its declared cap.

    The limit grows by 1 after every ``limit`` successes, which is one more request per round
    trip of the window, and halves on a 429. It halves at most once per window: each decrease
    starts a new epoch, ``acquire`` stamps a request with the epoch it was sent in, and a 429
    for a request sent before the last decrease is ignored, since that decrease already
    answered the overload the request saw.

    Usage, per request: when ``has_room()``, ``epoch = acquire()``; then ``on_success()`` or
    ``on_throttle(epoch)`` as the response says; always ``release()`` at the end.
    """

    def __init__(self, cap: int, start: int | None = None) -> None:
        """Starts at ``start``, or at ``cap`` (the endpoint's own declaration) when not given."""
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
        self._successes += 1
        if self._successes >= self._limit:
            self._successes = 0
            self._limit = min(self._cap, self._limit + 1)

    def on_throttle(self, epoch: int) -> bool:
        """Multiplicative decrease for a 429 to a request sent in ``epoch``.

        Returns:
            Whether the limit was decreased: False when an earlier 429 from the same window
            already did.
        """
        if epoch > self._epoch:
            raise ValueError(f"epoch {epoch} was never handed out (current {self._epoch})")
        if epoch < self._epoch:
            return False
        self._limit = max(1, self._limit // 2)
        self._epoch += 1
        self._successes = 0
        return True
