"""Capped exponential backoff with jitter. Pure, so tests seed the random source."""

from __future__ import annotations

import random

# First retry waits about this long; each failure doubles it up to the cap.
BASE_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 30.0
# A Retry-After longer than this is treated as this long, so one confused
# proxy cannot park the ingester for hours.
MAX_RETRY_AFTER_SECONDS = 300.0


def backoff_delay(
    attempt: int,
    rng: random.Random,
    base: float = BASE_DELAY_SECONDS,
    cap: float = MAX_DELAY_SECONDS,
    retry_after: float | None = None,
) -> float:
    """Return the seconds to wait before retry number ``attempt`` (1 for the first).

    The delay is drawn from the upper half of ``min(cap, base * 2**(attempt-1))``
    so that many ingesters restarted together spread out, and it is never
    shorter than what the server asked for in ``retry_after``.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, got {attempt}")
    ceiling = min(cap, base * 2 ** min(attempt - 1, 32))
    delay = ceiling / 2 + rng.random() * ceiling / 2
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return delay
