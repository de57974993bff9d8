"""UTC times as stored (ISO 8601 text, second precision, `Z`) and shown."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(dt: datetime | None) -> str | None:
    """`2026-11-25T13:00:00Z`: sorts correctly as text, readable in any SQLite tool."""
    if dt is None:
        return None
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    if dt.year < 1000:  # strftime does not pad the year; keep what earlier versions stored
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return dt.isoformat(timespec="seconds")[:19] + "Z"  # isoformat is ~4x cheaper


def from_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


RELATIVE_LIMIT = 7 * 86400  # past a week, a date says more than "3446d ago"


def relative(dt: datetime | None, now: datetime) -> str:
    """`3h ago` for terminals; the date (`2017-06-23`) when more than a week away."""
    if dt is None:
        return "never"
    seconds = (now - dt).total_seconds()
    if abs(seconds) > RELATIVE_LIMIT:
        return dt.astimezone(UTC).strftime("%Y-%m-%d")
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)}{unit}"
            break
    else:
        amount = f"{int(seconds)}s"
    return f"in {amount}" if future else f"{amount} ago"
