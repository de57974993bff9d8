"""CLI readers while the daemon writes: the real daemon polls 50 local feeds that change
every second (interval 1s) while three threads run `clusters list --json`, `feeds list
--json` and `digest -o -` back to back for a minute. Every answer must come with exit 0,
nothing on stderr (in particular no "database is locked"), and be consistent in itself:
one snapshot of the database, not a mix of before and after a write.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

import feedparser
import pytest
from daemon_util import (
    CliRun,
    DaemonProcess,
    FeedFarm,
    invariants,
    poll_lines,
    record,
    run_cli,
    write_config,
)  # fmt: skip
from feedserver import FeedServer

SECONDS = float(os.environ.get("AGG_CONCURRENCY_SECONDS", "60"))
FEEDS = 50
COMMANDS = {
    "clusters list": ("clusters", "list", "--json", "--min-size", "1", "--limit", "0",
                      "--since", "30d"),
    "feeds list": ("feeds", "list", "--json"),
    "digest": ("digest", "-o", "-"),
}  # fmt: skip


@dataclass
class Tally:
    runs: int = 0
    slowest: float = 0.0
    total: float = 0.0
    problems: list[str] = field(default_factory=list)
    state: dict = field(default_factory=dict)  # what earlier answers said, for monotonicity


def check_clusters(run: CliRun, tally: Tally) -> None:
    clusters = json.loads(run.stdout)
    seen: dict[int, int] = {}
    total = 0
    for c in clusters:
        items = c["items"]
        total += len(items)
        if c["size"] < len(items):
            tally.problems.append(
                f"cluster {c['id']}: size {c['size']} < {len(items)} items listed"
            )
        elif c["size"] != len(items):  # nothing is pruned in this test
            tally.problems.append(f"cluster {c['id']}: size {c['size']} != {len(items)} items "
                                  "listed, with nothing pruned")  # fmt: skip
        if not items:
            tally.problems.append(f"cluster {c['id']} is listed without members")
            continue
        if c["feeds"] != len({i["feed"] for i in items}):
            tally.problems.append(f"cluster {c['id']}: feeds {c['feeds']} but items from "
                                  f"{len({i['feed'] for i in items})} feeds")  # fmt: skip
        first = items[0]  # members are listed earliest first; the representative is the earliest
        if (c["title"], c["url"]) != (first["title"], first["url"]) or first["similarity"] != 1.0:
            tally.problems.append(f"cluster {c['id']}: representative {c['title']!r} is not its "
                                  f"earliest member {first['title']!r}")  # fmt: skip
        for i in items:
            if i["id"] in seen:
                tally.problems.append(f"item {i['id']} listed under clusters {seen[i['id']]} "
                                      f"and {c['id']}")  # fmt: skip
            seen[i["id"]] = c["id"]
    if total < tally.state.get("items", 0):
        tally.problems.append(f"clusters list shows {total} items after showing "
                              f"{tally.state['items']} (items are never deleted)")  # fmt: skip
    tally.state["items"] = max(total, tally.state.get("items", 0))


def check_feeds(run: CliRun, tally: Tally) -> None:
    feeds = json.loads(run.stdout)
    if len(feeds) != FEEDS:
        tally.problems.append(f"feeds list shows {len(feeds)} feeds, not {FEEDS}")
    counts = tally.state.setdefault("counts", {})
    for f in feeds:
        if not isinstance(f["items"], int) or f["status"] not in ("new", "ok", "error", "dead"):
            tally.problems.append(f"odd feed row {f}")
            continue
        if f["items"] < counts.get(f["url"], 0):
            tally.problems.append(f"{f['url']}: {f['items']} items after {counts[f['url']]}")
        counts[f["url"]] = max(f["items"], counts.get(f["url"], 0))


def check_digest(run: CliRun, tally: Tally) -> None:
    parsed = feedparser.parse(run.stdout)
    if parsed.bozo:
        tally.problems.append(f"digest is not well-formed: {parsed.bozo_exception}")
    elif not parsed.entries:
        tally.problems.append("digest has no entries although stories are stored")


CHECKS: dict[str, Callable[[CliRun, Tally], None]] = {
    "clusters list": check_clusters,
    "feeds list": check_feeds,
    "digest": check_digest,
}


def loop(name: str, cfg: Path, db: Path, until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        try:
            run = run_cli(cfg, db, *COMMANDS[name], timeout=120)
        except Exception as exc:  # a hang (timeout) is a finding, not a crash of the test
            tally.problems.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        tally.runs += 1
        tally.total += run.elapsed
        tally.slowest = max(tally.slowest, run.elapsed)
        if "database is locked" in run.stderr:
            tally.problems.append(f"{name}: 'database is locked': {run.stderr[-500:]}")
        if run.returncode != 0:
            tally.problems.append(f"{name}: exit {run.returncode}: {run.stderr[-1500:]}")
            continue
        if run.stderr.strip():
            tally.problems.append(f"{name}: unexpected stderr: {run.stderr[-500:]}")
        try:
            CHECKS[name](run, tally)
        except (ValueError, KeyError, TypeError) as exc:
            tally.problems.append(f"{name}: unreadable answer ({exc}): {run.stdout[:300]!r}")


@pytest.mark.slow
def test_cli_readers_while_the_daemon_writes(tmp_path: Path, feed_server: FeedServer) -> None:
    started = time.monotonic()
    farm = FeedFarm(feed_server, Random(4242), count=FEEDS)
    cfg, db = tmp_path / "feeds.yaml", tmp_path / "agg.db"
    write_config(cfg, farm.urls())
    daemon = DaemonProcess(cfg, db, tmp_path / "daemon.log")
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 60
        while not list(poll_lines(daemon.records())):
            assert daemon.alive(), daemon.text()[-3000:]
            assert time.monotonic() < deadline, "no poll within 60s:\n" + daemon.text()[-3000:]
            time.sleep(0.1)

        def change_feeds() -> None:
            while not stop.wait(1.0):
                farm.mutate(share=0.2)

        changer = threading.Thread(target=change_feeds, daemon=True)
        changer.start()
        until = time.monotonic() + SECONDS
        tallies = {name: Tally() for name in COMMANDS}
        threads = [threading.Thread(target=loop, args=(name, cfg, db, until, tallies[name]))
                   for name in COMMANDS]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        changer.join()
        alive = daemon.alive()
        polls = list(poll_lines(daemon.records()))
        rc = daemon.stop() if alive else daemon.proc.returncode
    finally:
        stop.set()
        daemon.kill()
        daemon.reap()

    for name, t in tallies.items():
        record(f"concurrency: slowest `{name}`",
               f"{t.slowest:.2f}s ({t.runs} runs, mean {t.total / max(t.runs, 1):.2f}s, "
               f"{len(t.problems)} problems)")  # fmt: skip
    written = sum(int(p["new_items"]) + int(p["updated_items"]) for p in polls)
    record("concurrency: daemon during the run",
           f"{len(polls)} polls, {written} items written or updated")  # fmt: skip
    record("concurrency: runtime", f"{time.monotonic() - started:.1f}s")

    errors = [line for line in daemon.text().splitlines() if '"level": "error"' in line]
    problems = [f"{name}: {p}" for name, t in tallies.items() for p in t.problems[:10]]
    assert alive, f"the daemon died during the run:\n{daemon.text()[-3000:]}"
    assert rc == 0, f"the daemon exited {rc} on SIGTERM:\n{daemon.text()[-3000:]}"
    assert not problems, "\n".join(problems)
    assert all(t.runs for t in tallies.values()), {n: t.runs for n, t in tallies.items()}
    assert written, "the daemon wrote nothing while the readers ran"
    assert not errors, f"the daemon logged errors: {errors[:5]}"
    assert not invariants(db), invariants(db)
