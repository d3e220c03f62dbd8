"""Retry delays: full jitter under a doubling, capped window; Retry-After is a floor."""

from __future__ import annotations

import random

from msgsync_client.backoff import Backoff


def test_delays_stay_in_a_doubling_window_up_to_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=4.0, rng=random.Random(7))
    windows = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    delays = [backoff.next_delay() for _ in windows]
    assert all(0 <= d <= w for d, w in zip(delays, windows, strict=True))
    # Jittered: not the same value each time.
    assert len(set(delays)) == len(delays)


def test_retry_after_is_never_undercut_and_reset_starts_over() -> None:
    backoff = Backoff(base=0.5, cap=4.0, rng=random.Random(7))
    assert all(backoff.next_delay(retry_after=3) >= 3 for _ in range(10))
    backoff.reset()
    assert backoff.next_delay() <= 0.5
