"""Retry delays: exponential backoff with full jitter, never shorter than Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Full jitter (AWS architecture blog, "Exponential Backoff and Jitter"): clients that
    failed together spread their retries over the whole window instead of stampeding the
    server again in step, which is what a recovering server needs most."""

    base: float = 0.5
    cap: float = 30.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self, retry_after: float | None = None) -> float:
        window = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        delay = self.rng.uniform(0, window)
        # The server's Retry-After is a floor: it knows when it expects to be back.
        return max(delay, retry_after or 0.0)

    def reset(self) -> None:
        self.attempt = 0
