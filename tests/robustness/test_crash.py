"""Crash safety: the real daemon killed with SIGKILL at random moments, over and over.

50 local feeds (RSS and Atom, 20-40 entries each, stories shared between feeds) change
between kills, so every run has new data to write. After each kill the database is read
as the crash left it (from a copy, so the restarted daemon still meets the hot WAL): every
(feed, guid) stored then was committed and must still be there at the end. At the end a
normal `--once` poll must succeed; the database must satisfy every invariant
(daemon_util.invariants) after each kill and at the end. Seeded: AGG_CRASH_SEED replays a run.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from random import Random

import pytest
from daemon_util import (
    DaemonProcess,
    FeedFarm,
    committed_keys,
    connect,
    crash_copy,
    has_schema,
    invariants,
    poll_lines,
    record,
    write_config,
)  # fmt: skip
from feedserver import FeedServer

SEED = int(os.environ.get("AGG_CRASH_SEED", "20261125"))
KILLS = 20
KILL_AFTER = (0.2, 2.5)  # seconds after the daemon was started
# Start-up (imports, migrations, index rebuild) takes ~1s and a poll of 50 feeds 1.5-3.5s
# on a 2-core machine, so a delay counted from the process spawn almost never reaches a
# write. Every STARTUP_EVERY-th kill counts from the spawn (kills during start-up and
# migrations); the others count from the daemon's "daemon started" log line.
STARTUP_EVERY = 4
STARTED_WITHIN = 20.0


def _started_at(daemon: DaemonProcess) -> float:
    """monotonic() when the daemon logged that it started (or when it exited)."""
    deadline = time.monotonic() + STARTED_WITHIN
    while daemon.alive() and time.monotonic() < deadline:
        if "daemon started" in daemon.text():
            return time.monotonic()
        time.sleep(0.02)
    return time.monotonic()


def _phase(records: list[dict], stored: int, reported: int) -> str:
    """How far the killed run got (`stored`: items it committed, `reported`: new items its
    finished polls logged)."""
    messages = [r.get("message", "") for r in records]
    if stored > reported:
        return "inside a poll, some feeds committed"
    if any(m.startswith("poll: ") for m in messages):
        return "between polls"
    if any(m.startswith("daemon started") for m in messages):
        return "running, nothing committed yet"
    return "starting up"


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_committed_item(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    started = time.monotonic()
    rng = Random(SEED)
    farm = FeedFarm(feed_server, rng, count=50)
    cfg, db = tmp_path / "feeds.yaml", tmp_path / "agg.db"
    write_config(cfg, farm.urls())

    committed: set[tuple[str, str]] = set()  # (feed url, guid) seen in the DB after a kill
    previous = 0
    problems: list[str] = []
    phases: Counter[str] = Counter()
    leftover_counts: list[int] = []
    survived = 0
    for run in range(KILLS):
        if run:
            farm.mutate()
        daemon = DaemonProcess(cfg, db, tmp_path / f"run{run:02d}.log")
        delay = rng.uniform(*KILL_AFTER)
        origin = daemon.started if run % STARTUP_EVERY == 0 else _started_at(daemon)
        time.sleep(max(0.0, origin + delay - time.monotonic()))
        was_alive = daemon.alive()
        daemon.kill()
        leftovers = daemon.leftovers(grace=0.5)
        leftover_counts.append(len(leftovers))
        daemon.reap()
        text, records = daemon.text(), daemon.records()
        if not was_alive:
            problems.append(f"run {run}: the daemon exited ({daemon.proc.returncode}) before the "
                            f"kill at {delay:.2f}s:\n{text[-2000:]}")  # fmt: skip
        if "already running" in text:
            problems.append(f"run {run}: a restart after SIGKILL said 'already running'")
        bad = [r for r in records if r.get("level") in ("error", "critical") or "exception" in r]
        if bad:
            problems.append(f"run {run}: error lines in the log: {bad[:3]}")
        if was_alive and not bad:
            survived += 1
        copy = crash_copy(db, tmp_path / "crash-copy") if db.exists() else None
        if copy is None or not has_schema(copy):
            phases["starting up"] += 1
            continue
        now_keys = committed_keys(copy)
        broken_now = invariants(copy)
        if broken_now:  # every feed's write is one transaction: no crash may show half of one
            problems.append(f"run {run}: the database as the kill left it breaks {broken_now}")
        vanished = committed - now_keys
        if vanished:
            problems.append(f"run {run}: {len(vanished)} items committed earlier are gone, "
                            f"e.g. {sorted(vanished)[:3]}")  # fmt: skip
        reported = sum(int(p["new_items"]) for p in poll_lines(records))
        phases[_phase(records, len(now_keys) - previous, reported)] += 1
        if len(now_keys) - previous < reported:
            problems.append(f"run {run}: finished polls reported {reported} new items but only "
                            f"{len(now_keys) - previous} were stored")  # fmt: skip
        previous = len(now_keys)
        committed |= now_keys

    # a normal poll after all that: every feed is due again after its 1s interval
    time.sleep(1.5)
    final_run = DaemonProcess(cfg, db, tmp_path / "final-once.log", "--once")
    rc = final_run.wait(120)
    leftovers_once = final_run.leftovers(grace=1.0)
    final_run.reap()
    assert rc == 0, f"--once after the crashes exited {rc}:\n{final_run.text()[-3000:]}"
    final_polls = list(poll_lines(final_run.records()))
    assert final_polls, f"--once logged no poll:\n{final_run.text()[-3000:]}"

    final = committed_keys(db)
    lost = committed - final
    served = farm.served()
    missing_now = set(served) - final
    conn = connect(db)
    try:
        stale_titles = [
            (url, guid, title, served[(url, guid)])
            for url, guid, title in conn.execute(
                "SELECT f.url, i.key, i.title FROM items i JOIN feeds f ON f.id = i.feed_id")
            if (url, guid) in served and served[(url, guid)] != title
        ]  # fmt: skip
        clusters = conn.execute("SELECT count(*) FROM clusters").fetchone()[0]
    finally:
        conn.close()
    broken = invariants(db)
    elapsed = time.monotonic() - started

    record("crash: kills survived", f"{survived}/{KILLS} (seed {SEED})")
    landed = ", ".join(f"{k}: {v}" for k, v in sorted(phases.items()))
    record("crash: where the kills landed", landed)
    record("crash: items committed before the last kill", str(len(committed)))
    record("crash: items lost", str(len(lost)))
    record("crash: items and clusters at the end", f"{len(final)} items, {clusters} clusters")
    record("crash: processes left running after each SIGKILL of the daemon",
           f"max {max(leftover_counts)}, in {sum(1 for c in leftover_counts if c)}/{KILLS} kills; "
           f"after a clean --once: {len(leftovers_once)}")  # fmt: skip
    record("crash: runtime", f"{elapsed:.1f}s")

    assert not problems, "\n".join(problems)
    assert not lost, f"{len(lost)} committed items lost, e.g. {sorted(lost)[:5]}"
    assert not broken, f"broken invariants after {KILLS} kills: {broken}"
    assert not missing_now, (f"{len(missing_now)} served entries not stored after the final "
                             f"--once, e.g. {sorted(missing_now)[:5]}")  # fmt: skip
    assert not stale_titles, f"{len(stale_titles)} items keep an old title: {stale_titles[:3]}"
    assert not leftovers_once, f"--once left processes running: {leftovers_once}"


@pytest.mark.slow
def test_leftover_workers_of_a_killed_daemon_exit_on_their_own(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """A daemon killed with SIGKILL mid-run should not leave its forkserver and parse
    workers running forever (a supervisor without cgroups, or a crash loop, piles them up)."""
    farm = FeedFarm(feed_server, Random(SEED + 1), count=10)
    cfg, db = tmp_path / "feeds.yaml", tmp_path / "agg.db"
    write_config(cfg, farm.urls())
    daemon = DaemonProcess(cfg, db, tmp_path / "run.log")
    try:
        deadline = time.monotonic() + 30
        while not list(poll_lines(daemon.records())):  # the parse pool exists after a poll
            assert daemon.alive(), daemon.text()[-3000:]
            assert time.monotonic() < deadline, "no poll within 30s:\n" + daemon.text()[-3000:]
            time.sleep(0.1)
        daemon.kill()
        leftovers = daemon.leftovers(grace=3.0)
        record("crash: processes alive 3s after SIGKILL of the daemon", str(len(leftovers)))
        assert not leftovers, (
            f"{len(leftovers)} processes of the killed daemon still run 3s later "
            f"(pids {leftovers}): the forkserver/parse workers are orphaned"
        )
    finally:
        daemon.kill()
        daemon.reap()
