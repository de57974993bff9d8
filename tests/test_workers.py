"""Several workers on one PostgreSQL database (#17): the store's parts (feed leases, the
publisher lock's session, the lease setting), on both backends where they apply."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from aggregator.config import parse_config
from aggregator.errors import ConfigError
from aggregator.store import leases
from aggregator.store.database import Store
from aggregator.timeutil import iso, utcnow

# ---------------------------------------------------------------- the parts


@pytest.fixture
def store(db_target: Path | str) -> Iterator[Store]:
    s = Store.open(db_target)
    try:
        yield s
    finally:
        s.close()


def test_claims_are_disjoint_end_with_the_lease_and_are_released(
    store: Store, tmp_path: Path
) -> None:
    config = parse_config("feeds:\n" + "".join(f"  - https://example.com/{i}.xml\n" for i in range(10)),
                          tmp_path / "feeds.yaml")  # fmt: skip
    store.sync_feeds(config, utcnow())
    now = utcnow()
    store.conn.execute("UPDATE feeds SET next_fetch_at = ?", (iso(now),))
    a = leases.claim(store, "a", now, 60, 4)
    b = leases.claim(store, "b", now, 60, 4)
    c = leases.claim(store, "c", now, 60, 4)
    assert [len(a), len(b), len(c)] == [4, 4, 2]
    assert len({f.id for f in a + b + c}) == 10
    assert leases.claim(store, "d", now, 60, 4) == []
    assert leases.leases(store) == {"a": 4, "b": 4, "c": 2}
    # a result written ends the claim; a lease that ended is anyone's
    store.update_feed_state(a[0].id, next_fetch_at=now.replace(year=now.year + 1))
    assert leases.leases(store)["a"] == 3
    later = now.replace(year=now.year + 1)
    assert len(leases.claim(store, "d", later, 60, 10)) == 10  # every feed is due by then
    assert leases.release(store, "d") == 10 and leases.leases(store) == {}
    assert leases.renew(store, "a", later) == 0


def test_a_lock_session_is_named_after_its_worker_and_keeps_the_given_options() -> None:
    url = "postgresql://u:pw@db.example:5433/agg?sslmode=require&options=-c%20search_path%3Dagg"
    out = leases.lock_session_url(url, "host:12:abcdef")
    parts = dict(p.split("=", 1) for p in urlsplit(out).query.split("&"))
    assert out.startswith("postgresql://u:pw@db.example:5433/agg?")
    assert parts["sslmode"] == "require"
    assert parts["application_name"] == "aggregator%20host%3A12%3Aabcdef"
    assert parts["options"].startswith("-c%20search_path%3Dagg%20-c%20tcp_keepalives_idle%3D30")
    assert "+" not in out  # libpq does not read "+" as a space


def test_worker_ids_differ_and_name_the_host_and_process() -> None:
    a, b = leases.worker_id("h" * 100, 42), leases.worker_id("h" * 100, 42)
    assert a != b and a.startswith("h" * leases.HOST_CHARS + ":42:")
    assert len(leases.APPLICATION_PREFIX + a) <= 63  # PostgreSQL's application_name limit


def test_lease_is_a_duration_setting(tmp_path: Path) -> None:
    assert parse_config("settings:\n  lease: 90s\n", tmp_path / "f.yaml").settings.lease == 90
    assert parse_config("", tmp_path / "f.yaml").settings.lease == 600
    with pytest.raises(ConfigError, match="settings.lease"):
        parse_config("settings:\n  lease: 0s\n", tmp_path / "f.yaml")
