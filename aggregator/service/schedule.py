"""When to fetch a feed next: its interval, error backoff, Retry-After and the feed's own
hints (RSS <ttl>, Cache-Control max-age). Pure functions of their inputs."""

from __future__ import annotations

MAX_BACKOFF = 24 * 3600.0  # a failing feed is still tried daily
MAX_HINT = 24 * 3600.0  # a feed cannot ask us to wait more than a day
MIN_RETRY_AFTER = 60.0
# Regular polls come up to this share of the interval early, so feeds first fetched together
# (all at start-up) drift apart instead of hitting the network in one burst every interval.
JITTER = 0.05


def jittered(delay: float, interval: float, draw: float) -> float:
    """A regular poll's delay (the plain interval) shortened by up to JITTER of it (`draw`
    in [0, 1), the caller's randomness); a delay a feed's hints stretched, a backoff or a
    Retry-After stays as it is."""
    return delay * (1 - JITTER * draw) if delay == interval else delay


def next_fetch_delay(
    interval: float,
    *,
    error_count: int = 0,
    retry_after: float | None = None,
    ttl: float | None = None,
    max_age: float | None = None,
) -> float:
    """Seconds until the next fetch.

    - Retry-After wins (at least a minute, at most a day): the server said when.
    - After n consecutive errors: interval * 2**(n-1), capped at a day.
    - Otherwise the interval, stretched (never shortened) by <ttl> or max-age up to a day:
      a feed that says it changes hourly is not polled every 15 minutes.
    """
    if retry_after is not None:
        return min(max(retry_after, MIN_RETRY_AFTER), MAX_BACKOFF)
    if error_count > 0:
        return min(interval * 2 ** min(error_count - 1, 20), max(interval, MAX_BACKOFF))
    hint = max(ttl or 0.0, max_age or 0.0)
    if hint > interval:
        return min(hint, max(interval, MAX_HINT))
    return interval
