"""Retry backoff: one rule for every retry loop (job retries, consumer retries)."""

from __future__ import annotations

import random


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: about base, 2*base, 4*base ... up to cap.

    ``attempt`` counts from 1; the delay is drawn between half and all of
    ``min(cap, base * 2 ** (attempt - 1))``, so retrying clients spread out.
    """
    ceiling: float = min(cap, base * 2 ** min(max(attempt - 1, 0), 30))
    return ceiling * random.uniform(0.5, 1.0)
