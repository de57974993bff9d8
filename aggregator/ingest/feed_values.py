"""Values as feeds write them -> typed values, shared by both XML parsers (feedparser's
mapping in parse.py and the fast path in fastparse.py), so the two cannot drift apart."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime
from typing import Any


def struct_to_datetime(value: Any) -> datetime | None:
    """A UTC time tuple (feedparser's `*_parsed`) as an aware datetime; None if absent or
    out of range."""
    if not value:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
    except (OverflowError, ValueError, OSError, TypeError):
        return None


def ttl_seconds(value: Any) -> float | None:
    """RSS <ttl> (minutes) in seconds; None unless a positive number."""
    try:
        minutes = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return minutes * 60 if minutes > 0 else None


def clean_str(value: Any) -> str | None:
    """Stripped text, lone surrogates replaced; None when empty."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    value = without_lone_surrogates(value.strip())
    return value or None


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(text: str) -> str:
    """Surrogate pairs (a JSON "\\ud83d\\ude00") joined into their character, lone halves
    replaced by U+FFFD: a lone one cannot be stored or written as UTF-8."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
