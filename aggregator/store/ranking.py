"""How the digest orders its stories: as a front page does, by how widely a story was
carried and how recently it was reported. A pure function of counts and times."""

from __future__ import annotations

import math
from datetime import datetime


def story_score(outlets: int, latest: datetime, now: datetime, sources_weight: float, recency: float) -> float:
    """sources_weight × log2(outlets) − age / recency, the age being the time since the
    story's latest report. With the defaults (1.0, 12 h) every doubling of the outlets that
    carried a story is worth 12 hours: a story two outlets carried outranks every one-outlet
    story of the same age, and one eight outlets carried is still above a one-outlet
    report 36 hours newer."""
    age = max(0.0, (now - latest).total_seconds())
    return sources_weight * math.log2(max(1, outlets)) - age / recency
