"""Bounded, jittered retries for compare-and-swap loops."""
from __future__ import annotations

import random
import time
from typing import Iterator

from ipam.errors import RetriesExhausted

DATASTORE_RETRIES = 100  # upstream's datastoreRetries
BASE_DELAY = 0.002  # seconds
MAX_DELAY = 0.1


class Deadline:
    """A point in time an operation must finish by (monotonic clock)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0


def attempts(what: str, deadline: Deadline | None = None, limit: int = DATASTORE_RETRIES) -> Iterator[int]:
    """Yield attempt numbers 0, 1, ...; sleep a full-jitter exponential
    backoff between attempts; raise :class:`RetriesExhausted` once ``limit``
    attempts were used or ``deadline`` passed. The loop body ``break``s or
    ``return``s on success and ``continue``s after a conflict."""
    for attempt in range(limit):
        if attempt:
            if deadline is not None and deadline.expired():
                break
            delay = random.uniform(0, min(MAX_DELAY, BASE_DELAY * (2 ** min(attempt, 16))))
            if deadline is not None:
                delay = min(delay, max(deadline.remaining(), 0))
            time.sleep(delay)
        yield attempt
    raise RetriesExhausted(f"{what}: gave up after {limit} attempts or the deadline (conflicting updates)")
