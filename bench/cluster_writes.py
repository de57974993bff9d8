"""One story many times: the cost of writing N items that all join one cluster
(issue #12, item 10; aggregator/store/migrations/sqlite/012).

For each N (default 1,000 / 2,000 / 4,000 / 20,000; --quick: 200 / 400):
- fetch: one local feed (127.0.0.1) serves N entries that differ only in their guid; the
  real `fetch_all` stores them into a new SQLite file in one write transaction (one feed),
  all in one cluster (dedup stage included);
- recluster: `Clusterer.recluster` of that database;
- store writes: the statements the fetch's transaction runs to store and place the N items
  (Store.insert_items, ClusterStore.add_singletons / set_item_clusters / refresh, as
  Clusterer._place_batch calls them) without the dedup stage: what the triggers cost.
Measured: wall seconds of each, and the SQLite virtual-machine steps per item (the progress
handler), which do not depend on the machine's load: constant per item means linear
writes. `--schema 11` runs the same with the migrations up to 011 only (the trigger of 006
that re-marked the whole cluster per joining item), for a before/after on one machine.

Run (from the repo root):
    .venv/bin/python bench/cluster_writes.py                # ~1-2 min
    .venv/bin/python bench/cluster_writes.py --schema 11    # before 012: ~9 min at 20,000
    .venv/bin/python bench/cluster_writes.py --quick        # smoke run, seconds
    options: --sizes 1000,4000  --schema N  --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator.config import parse_config  # noqa: E402
from aggregator.records import Item  # noqa: E402
from aggregator.service.app import fetch_all  # noqa: E402
from aggregator.service.clustering import Clusterer  # noqa: E402
from aggregator.store.clusters import ClusterStore, bump_index_writes
from aggregator.store.database import Store, migrations  # noqa: E402

try:
    from bench.feedserver_util import StaticFeedServer
except ImportError:  # run as a script: bench/ is on sys.path
    from feedserver_util import StaticFeedServer  # type: ignore[no-redef]

SIZES, QUICK_SIZES = (1000, 2000, 4000, 20_000), (200, 400)
STEP_GRAIN = 1000  # the progress handler runs every this many VM steps
TITLE = "Harbour bridge to close for repairs"
TEXT = (
    "&lt;p&gt;The harbour bridge will close for repairs from Monday, the city council said on "
    "Tuesday, after inspectors found corrosion in two of the main cables that carry its deck.&lt;/p&gt;"
)


def identical_entries(n: int, published: datetime) -> bytes:
    """An RSS document of `n` entries that differ only in their guid."""
    date = format_datetime(published, usegmt=True)
    entry = (f"<item><guid isPermaLink='false'>copy-{{}}</guid><title>{TITLE}</title>"
             f"<link>https://mirror.example.com/harbour-bridge</link><pubDate>{date}</pubDate>"
             f"<description>{TEXT}</description></item>")  # fmt: skip
    items = "\n".join(entry.format(i) for i in range(n))
    return (f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>Mirror</title>"
            f"<link>https://mirror.example.com/</link>{items}</channel></rss>").encode()  # fmt: skip


class StepCounter:
    """SQLite VM steps run on a connection while counting."""

    def __init__(self, conn):
        self.conn = conn
        self.steps = 0

    def _tick(self) -> int:
        self.steps += STEP_GRAIN
        return 0

    def __enter__(self) -> StepCounter:
        self.steps = 0
        self.conn.set_progress_handler(self._tick, STEP_GRAIN)
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.set_progress_handler(None, STEP_GRAIN)


def migrations_upto(schema: int | None, folder: Path) -> Path | None:
    """A folder with the migrations up to `schema` (None: all, the package's own)."""
    if schema is None:
        return None
    folder.mkdir()
    for number, path in migrations():
        if number <= schema:
            shutil.copy(path, folder)
    return folder


def open_store(db: Path, old_migrations: Path | None) -> Store:
    return (
        Store.open(db) if old_migrations is None else Store.open(db, migrations_dir=old_migrations)
    )


def store_writes(n: int, tmp: Path, old_migrations: Path | None) -> tuple[float, int]:
    """(seconds, VM steps) of storing `n` items of one feed and placing them in one cluster,
    in one transaction, with the calls Clusterer._place_batch makes."""
    store = open_store(tmp / f"store_writes_{n}.db", old_migrations)
    try:
        now = datetime.now(UTC)
        store.conn.execute("INSERT INTO feeds (id, url, created_at) VALUES (1, 'https://mirror.example.com/', ?)",
                           (now.isoformat(),))  # fmt: skip
        items = [Item(key=f"copy-{i}", url=None, canonical_url=None, title=TITLE, text=TEXT, author=None,
                      published=now, updated=None, content_hash="same") for i in range(n)]  # fmt: skip
        clusters = ClusterStore(store)
        with StepCounter(store.conn) as counted:
            started = time.perf_counter()
            with store.transaction():
                ids = store.insert_items(1, items, now)
                cluster = clusters.next_cluster_id()
                seq = bump_index_writes(store)
                clusters.add_singletons([(cluster, ids[0], now, cluster, None, None, None)], now)
                clusters.set_item_clusters([(cluster, 1.0, item_id) for item_id in ids], seq)
                clusters.refresh([cluster], now)
            return time.perf_counter() - started, counted.steps
    finally:
        store.close()


def run_one(n: int, server: StaticFeedServer, tmp: Path, old_migrations: Path | None) -> dict:
    server.add(f"/mirror{n}.xml", identical_entries(n, datetime.now(UTC) - timedelta(hours=2)),
               "application/rss+xml")  # fmt: skip
    cfg = tmp / f"feeds{n}.yaml"
    cfg.write_text(f"settings:\n  http: 'off'\n  parse_workers: 0\n  max_bytes: 100MB\n"
                   f"feeds:\n  - url: {server.url(f'/mirror{n}.xml')}\n    name: mirror\n", encoding="utf-8")  # fmt: skip
    config = parse_config(cfg.read_text(encoding="utf-8"), cfg)
    db = tmp / f"one_story_{n}.db"
    store = open_store(db, old_migrations)
    try:
        with StepCounter(store.conn) as fetched:
            started = time.perf_counter()
            report = fetch_all(config, store)
            fetch_s = time.perf_counter() - started
        if report.errors:
            raise SystemExit(f"fetch failed: {[o.error for o in report.outcomes]}")
        with StepCounter(store.conn) as reclustered:
            started = time.perf_counter()
            clusters = Clusterer(config.settings.dedup).recluster(store)
            recluster_s = time.perf_counter() - started
        largest = store.conn.execute("SELECT max(size) FROM clusters").fetchone()[0]
        writes_s, writes_steps = store_writes(n, tmp, old_migrations)
        return {"items": n, "stored": report.new_items, "clusters": clusters, "largest": largest,
                "schema": store.schema_version(), "fetch_s": round(fetch_s, 2),
                "fetch_steps_per_item": round(fetched.steps / n),
                "recluster_s": round(recluster_s, 2),
                "recluster_steps_per_item": round(reclustered.steps / n),
                "store_writes_s": round(writes_s, 2), "store_writes_steps_per_item": round(writes_steps / n)}  # fmt: skip
    finally:
        store.close()


def print_table(result: dict) -> None:
    headers = ("items", "clusters", "fetch s", "steps/item", "recluster s", "steps/item",
               "store writes s", "steps/item")  # fmt: skip
    rows = [(f"{r['items']:,}", r["clusters"], f"{r['fetch_s']:.2f}", f"{r['fetch_steps_per_item']:,}",
             f"{r['recluster_s']:.2f}", f"{r['recluster_steps_per_item']:,}",
             f"{r['store_writes_s']:.2f}", f"{r['store_writes_steps_per_item']:,}") for r in result["runs"]]  # fmt: skip
    widths = [max(len(h), *(len(str(row[i])) for row in rows)) for i, h in enumerate(headers)]
    print(
        f"one story N times, schema {result['schema']} (one feed, one write transaction per fetch)"
    )
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="200 and 400 items only")
    p.add_argument("--sizes", help="comma-separated item counts (default 1000,2000,4000,20000)")
    p.add_argument(
        "--schema", type=int, help="apply the migrations up to this number only (11: before 012)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else SIZES
    if args.sizes:
        sizes = tuple(int(n) for n in args.sizes.split(","))
    runs = []
    with tempfile.TemporaryDirectory(prefix="cluster_writes_") as tmp, StaticFeedServer() as server:
        old = migrations_upto(args.schema, Path(tmp) / "migrations")
        for n in sizes:
            runs.append(run_one(n, server, Path(tmp), old))
            if not args.json:
                r = runs[-1]
                print(f"  {n:,} items: fetch {r['fetch_s']:.2f} s, recluster {r['recluster_s']:.2f} s, "
                      f"store writes {r['store_writes_s']:.2f} s", file=sys.stderr, flush=True)  # fmt: skip
    result = {"schema": runs[0]["schema"], "python": sys.version.split()[0], "runs": runs}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
