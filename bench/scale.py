"""Scale benchmark: a database of N stored items (default 1,000,000) and what it costs the
daemon and the CLI.

The database is built fast, without fetching: `aggregator.store.Store.open` creates the
schema (all migrations), then plain sqlite3 executemany fills it: 2,000 feeds (due in 30
days, so the daemon fetches nothing), N items in story clusters (sizes 1-8, about 25% of
the clusters have 2+ members; members come from distinct feeds within hours of each other,
as copies of one text with the usual variations: footer added, cut to a lede, headline
changed), titles and ~150-word texts drawn from a vocabulary with a Zipf-like word
frequency, first seen over the last 90 days with 20% in the last 14 (the dedup window:
~200k indexed items at 1M). Items in the window get MinHash signatures from
`aggregator.dedup.signature.Signer` (the daemon indexes only those), signed by 2 processes. The FTS
triggers (if `items_fts` exists) and the duplicate-marking triggers on items and clusters
are dropped during the load; the index is rebuilt in one statement and the migrations'
backfill sections (after a line starting `-- Backfill`: aggregator/store/migrations/sqlite/006 marks duplicates
and counts them per feed) are run, then the triggers are recreated exactly as the
migrations made them. Last,
`PRAGMA optimize` (what the daemon runs hourly) and a WAL checkpoint.

Measured:
- DB size on disk;
- start-up in-process: `aggregator.service.app.Pipeline.start(config, store)` (the dedup index
  rebuild over the window), index items, `DedupIndex.nbytes / len(index)`, RSS growth;
- a daemon process: `aggregator run --once` with no feed due (start-up, index rebuild,
  one digest publish, exit): wall time and peak RSS of the process tree (/proc, 50 ms);
- queries: `clusters list`, `clusters show ID` (the largest recent cluster), `search WORD`
  and `stats` (when the CLI has them), `digest -o -`: median of 5 subprocess runs, and the
  median of 5 in-process runs of the same `aggregator.cli.main(argv)` after one warm-up
  (Python start-up and imports excluded; each run still opens the database). The page
  cache is warm (the DB was just written).
Targets: daemon peak RSS < 1 GB with 1M stored and ~200k indexed; every query < 200 ms
(in-process).

Run (from the repo root):
    .venv/bin/python bench/scale.py                  # 1,000,000 items, ~10 min
    .venv/bin/python bench/scale.py --quick          # 20,000 items, < 1 min
    options: --items N  --feeds F  --window-share S  --seed S  --json  --keep DIR
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import heapq
import io
import itertools
import json
import multiprocessing
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from e2e import run_tree, table  # noqa: E402 - bench scripts are not a package
from fetch_200 import REPO, VOCABULARY

DEFAULT_ITEMS, QUICK_ITEMS = 1_000_000, 20_000
FEEDS = 2000
DAYS = 90
WINDOW_DAYS = 14
WINDOW_SHARE = 0.2
MULTI_SHARE = 0.25  # clusters with 2-8 members
BATCH = 20_000
RUNS = 5
TARGET_RSS_MB = 1024
TARGET_QUERY_MS = 200
FOOTERS = ("Follow us on social media for the latest updates.",
           "Sign up for our daily newsletter to get the top stories in your inbox.",
           "The Associated Press contributed to this report.")  # fmt: skip


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


NAMES = 20_000
_SYLLABLES = ("ka", "lo", "mir", "ten", "vas", "dor", "el", "bri", "sun", "qua", "ze", "pol",
              "rin", "tha", "gor", "ul", "nes", "fi", "wat", "ham")  # fmt: skip


class Texts:
    """Titles and bodies from the vocabulary, Zipf-like word frequencies; each story also
    names one of 20,000 made-up places/people, since the ~500-word vocabulary alone would
    make every search term match most items."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.words = list(VOCABULARY)
        rng.shuffle(self.words)
        self.cum = list(itertools.accumulate(1 / (r + 1) ** 0.8 for r in range(len(self.words))))
        names = {"".join(rng.choices(_SYLLABLES, k=rng.randint(2, 4))) for _ in range(NAMES * 2)}
        self.names = sorted(names)[:NAMES]
        rng.shuffle(self.names)

    def name(self) -> str:
        return self.names[self.rng.randrange(len(self.names))].capitalize()

    def words_(self, k: int) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.cum, k=k)

    def text(self) -> str:
        words = self.words_(self.rng.randint(120, 180))
        out, start = [], 0
        while start < len(words):  # sentences of 8-20 words
            end = start + self.rng.randint(8, 20)
            out.append(" ".join(words[start:end]).capitalize() + ".")
            start = end
        return " ".join(out)

    def title(self) -> str:
        return " ".join(self.words_(self.rng.randint(6, 12))).capitalize()


def generate(n_items: int, feeds: int, now: datetime, seed: int, window_share: float):
    """Yields (item row without id, cluster index) in first-seen order, ~n_items of them;
    item rows: (feed_id, key, url, canonical_url, title, text, author, published_at,
    updated_at, first_seen_at, changed_at, content_hash, similarity)."""
    rng = random.Random(seed)
    texts = Texts(random.Random(seed + 1))
    # cluster sizes and start times first, so members can be emitted in time order
    sizes, total = [], 0
    while total < n_items:
        s = rng.randint(2, 8) if rng.random() < MULTI_SHARE else 1
        s = min(s, n_items - total)
        sizes.append(s)
        total += s
    horizon = DAYS * 86400
    window = WINDOW_DAYS * 86400
    starts = sorted(
        rng.uniform(0, window) if rng.random() < window_share else rng.uniform(window, horizon)
        for _ in sizes
    )[::-1]  # seconds before now, oldest first
    pending: list[tuple[float, int, tuple]] = []
    seq = itertools.count()
    for c, (ago, size) in enumerate(zip(starts, sizes, strict=True)):
        t0 = now - timedelta(seconds=ago)
        while pending and pending[0][0] <= t0.timestamp():
            _, _, row = heapq.heappop(pending)
            yield row
        name = texts.name()
        title, body = f"{name}: {texts.title()}", f"{name} {texts.text()}"
        for m, feed in enumerate(rng.sample(range(1, feeds + 1), size)):
            seen = min(now, t0 + timedelta(seconds=m * rng.uniform(0, 6 * 3600)))
            t, x, sim = title, body, 1.0
            if m:
                r = rng.random()
                if r < 0.4:
                    x, sim = body + " " + rng.choice(FOOTERS), 0.9
                elif r < 0.65:
                    x, sim = " ".join(body.split()[:60]), -0.9
                else:
                    t, sim = texts.title(), 0.85
            published = seen - timedelta(seconds=rng.uniform(0, 3600))
            key = f"urn:scale:{c}:{m}"
            url = f"https://outlet{feed}.example.com/news/{c}-{m}"
            digest = hashlib.sha256(f"{t}\n{x}".encode()).hexdigest()
            row = (feed, key, url + "?utm_source=rss", url, t, x, None, iso(published), None,
                   iso(seen), iso(seen), digest, sim if m else 1.0)  # fmt: skip
            heapq.heappush(pending, (seen.timestamp(), next(seq), (row, c)))
    while pending:
        yield heapq.heappop(pending)[2]


_signer = None


def _sign(chunk: list[tuple[int, str, str]]) -> list[tuple]:
    global _signer
    if _signer is None:
        from aggregator.config import DedupSettings
        from aggregator.dedup.signature import Signer

        _signer = Signer(DedupSettings())
    out = []
    sigs = _signer.sign_many([(title, text) for _, title, text in chunk])
    for (item_id, _, _), sig in zip(chunk, sigs, strict=True):
        full, lede = sig.to_blobs()
        out.append((item_id, sig.kind, sig.size, sig.lede_size, full, lede))
    return out


def build(db: Path, n_items: int, feeds: int, now: datetime, seed: int, window_share: float,
          log) -> dict:  # fmt: skip
    from aggregator.store.database import Store

    Store.open(db).close()  # schema and migrations
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    triggers = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN ('items', 'clusters')"
    ).fetchall()
    has_fts = bool(conn.execute(
        "SELECT 1 FROM sqlite_master WHERE name = 'items_fts'").fetchone())  # fmt: skip
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    for name, _ in triggers:
        conn.execute(f"DROP TRIGGER [{name}]")
    due = iso(now + timedelta(days=30))
    conn.executemany(
        "INSERT INTO feeds (id, url, name, tags, active, status, next_fetch_at, last_fetch_at,"
        " created_at) VALUES (?, ?, ?, '[]', 1, 'ok', ?, ?, ?)",
        [(f, feed_url(f), f"Scale Outlet {f:04d}", due, iso(now), iso(now - timedelta(days=DAYS)))
         for f in range(1, feeds + 1)],
    )  # fmt: skip
    clusters: dict[int, list] = {}  # index -> [rep id, rep published, first, last, size, feeds]
    window_from = iso(now - timedelta(days=WINDOW_DAYS))
    to_sign: list[tuple[int, str, str]] = []
    rows: list[tuple] = []
    item_id = 0

    def flush() -> None:
        conn.executemany(
            "INSERT INTO items (id, feed_id, key, url, canonical_url, title, text, author,"
            " published_at, updated_at, first_seen_at, changed_at, content_hash, similarity,"
            " cluster_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)  # fmt: skip
        rows.clear()

    for row, c in generate(n_items, feeds, now, seed, window_share):
        item_id += 1
        rows.append((item_id, *row, c + 1))
        published = row[7]
        st = clusters.get(c)
        if st is None:
            clusters[c] = [item_id, published, published, published, 1]
        else:
            if published < st[1]:
                st[0], st[1] = item_id, published
            st[2], st[3] = min(st[2], published), max(st[3], published)
            st[4] += 1
        if row[9] >= window_from:
            to_sign.append((item_id, row[4], row[5]))
        if len(rows) >= BATCH:
            flush()
            if item_id % 200_000 < BATCH:
                log(f"  {item_id:,} items ({time.perf_counter() - t0:.0f}s)")
    flush()
    stamp = iso(now)
    conn.executemany(
        "INSERT INTO clusters (id, representative_id, size, feed_count, first_seen, last_seen,"
        " updated_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(c + 1, st[0], st[4], st[4], st[2], st[3], stamp, st[2]) for c, st in clusters.items()],
    )  # fmt: skip
    conn.execute("COMMIT")
    items_s = time.perf_counter() - t0
    log(f"  {item_id:,} items, {len(clusters):,} clusters in {items_s:.0f}s; "
        f"signing {len(to_sign):,} items in the window")  # fmt: skip

    t1 = time.perf_counter()
    chunks = [to_sign[i : i + 2000] for i in range(0, len(to_sign), 2000)]
    conn.execute("BEGIN")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for signed in pool.map(_sign, chunks):
            conn.executemany("INSERT INTO signatures (item_id, kind, size, lede_size, full, lede)"
                             " VALUES (?, ?, ?, ?, ?, ?)", signed)  # fmt: skip
    conn.execute("COMMIT")
    sign_s = time.perf_counter() - t1

    t2 = time.perf_counter()
    conn.execute("BEGIN")
    if has_fts:
        conn.execute("INSERT INTO items_fts (items_fts) VALUES ('rebuild')")
    fts_s = time.perf_counter() - t2
    t_marks = time.perf_counter()
    for statement in backfills():
        conn.execute(statement)
    for _, sql in triggers:
        conn.execute(sql)
    conn.execute("COMMIT")
    marks_s = time.perf_counter() - t_marks
    t3 = time.perf_counter()
    conn.execute("PRAGMA optimize")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    multi = sum(1 for st in clusters.values() if st[4] > 1)
    return {"items": item_id, "clusters": len(clusters), "multi_clusters": multi,
            "signed": len(to_sign), "fts": has_fts, "load_items_s": round(items_s, 1),
            "sign_s": round(sign_s, 1), "fts_rebuild_s": round(fts_s, 1),
            "backfill_s": round(marks_s, 1),
            "optimize_s": round(time.perf_counter() - t3, 1)}  # fmt: skip


def backfills() -> list[str]:
    """The statements after `-- Backfill` in each migration: what the triggers keep up to
    date, computed from scratch for a load that bypassed them."""
    from aggregator.store.database import _split_sql, migrations

    statements = []
    for _, path in migrations():
        text = path.read_text(encoding="utf-8")
        at = re.search(r"^-- Backfill", text, re.MULTILINE)
        if at:
            statements += _split_sql(text[at.start() :])
    return statements


def feed_url(f: int) -> str:
    return f"http://127.0.0.1:9/scale/feed{f:04d}.xml"  # never fetched: not due for 30 days


def write_config(path: Path, feeds: int) -> None:
    lines = ["settings:", "  http: off", f"  digest_path: {path.parent / 'digest.xml'}", "feeds:"]
    lines += [f"  - url: {feed_url(f)}\n    name: Scale Outlet {f:04d}" for f in range(1, feeds + 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def startup_in_process(cfg: Path, db: Path) -> dict:
    from aggregator.config import load_config
    from aggregator.service.app import Pipeline
    from aggregator.store.database import Store

    config = load_config(cfg)
    store = Store.open(db)
    before = rss_mb()
    t0 = time.perf_counter()
    pipeline = Pipeline.start(config, store)
    seconds = time.perf_counter() - t0
    index = pipeline.clusterer.index
    out = {"startup_s": round(seconds, 2), "indexed": len(index),
           "index_bytes_per_item": round(index.nbytes / max(len(index), 1)),
           "index_mb": round(index.nbytes / 2**20, 1),
           "rss_growth_mb": round(rss_mb() - before, 1)}  # fmt: skip
    pipeline.close()
    store.close()
    return out


def cli_commands() -> set[str]:
    from aggregator.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # argparse's own record
    return set(sub.choices)


def pick_cluster_and_words(db: Path, now: datetime, seed: int) -> tuple[int, str, str]:
    """The largest cluster active in the last day; the name its story is about (a search
    that matches a few dozen items, like a real one); a word most items contain."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cid, title = conn.execute(
            "SELECT c.id, r.title FROM clusters c JOIN items r ON r.id = c.representative_id"
            " WHERE c.last_seen >= ? ORDER BY c.size DESC, c.id LIMIT 1",
            (iso(now - timedelta(days=1)),),
        ).fetchone()
    finally:
        conn.close()
    return cid, title.split(":", 1)[0], Texts(random.Random(seed + 1)).words[0]


@contextlib.contextmanager
def _stdout_to_devnull():
    """File descriptor 1 to /dev/null: the CLI's printers hold the sys.stdout of import time."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        with contextlib.redirect_stdout(io.TextIOWrapper(open(devnull, "wb", closefd=False))):
            yield
            sys.stdout.flush()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def time_queries(cfg: Path, db: Path, queries: dict[str, list[str]]) -> dict:
    from aggregator import cli
    from aggregator.config import load_config

    base = [sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    results = {}
    for name, argv in queries.items():
        subs, out_bytes = [], 0
        for _ in range(RUNS):
            t0 = time.perf_counter()
            proc = subprocess.run(base + argv, cwd=REPO, env=env, capture_output=True)
            subs.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed: {proc.stderr.decode()[-2000:]}")
            out_bytes = len(proc.stdout)
        inproc = []
        for i in range(RUNS + 1):
            with _stdout_to_devnull():
                t0 = time.perf_counter()
                rc = cli.main(["--config", str(cfg), "--db", str(db), *argv])
                dt = time.perf_counter() - t0
            if rc != 0:
                raise SystemExit(f"{name} failed in-process with exit code {rc}")
            if i:  # the first run imports the command's modules
                inproc.append(dt)
        results[name] = {"argv": argv, "subprocess_ms": round(1000 * statistics.median(subs)),
                         "in_process_ms": round(1000 * statistics.median(inproc), 1),
                         "output_bytes": out_bytes}  # fmt: skip
    configs = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        load_config(cfg)
        configs.append(time.perf_counter() - t0)
    results["of which load_config (feeds.yaml)"] = {
        "argv": [], "subprocess_ms": None, "in_process_ms": round(1000 * statistics.median(configs), 1),
        "output_bytes": 0}  # fmt: skip
    starts = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import aggregator.cli"], cwd=REPO, env=env, check=True)
        starts.append(time.perf_counter() - t0)
    results["python start-up + import aggregator.cli"] = {
        "argv": [], "subprocess_ms": round(1000 * statistics.median(starts)), "in_process_ms": None,
        "output_bytes": 0}  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--items", type=int, default=DEFAULT_ITEMS)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_ITEMS:,} items")
    ap.add_argument("--feeds", type=int, default=FEEDS)
    ap.add_argument("--window-share", type=float, default=WINDOW_SHARE,
                    help="share of items first seen in the last 14 days (0.2)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", type=Path, help="work dir to keep (DB, config)")
    args = ap.parse_args(argv)
    n = QUICK_ITEMS if args.quick else args.items
    from e2e import log
    work = args.keep or Path(tempfile.mkdtemp(prefix="scale_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    db, cfg = work / "scale.db", work / "feeds.yaml"
    for p in work.glob("scale.db*"):
        p.unlink()
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        log(f"building {n:,} items in {db}")
        built = build(db, n, args.feeds, now, args.seed, args.window_share, log)
        size = sum(p.stat().st_size for p in work.glob("scale.db*"))
        write_config(cfg, args.feeds)
        start = startup_in_process(cfg, db)
        log(f"  start-up {start}")
        daemon = run_tree([sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db),
                           "run", "--once"], timeout=1800)  # fmt: skip
        if daemon.returncode != 0:
            raise SystemExit(f"run --once failed: {daemon.stderr[-2000:]}")
        m = re.search(r"dedup index rebuilt: (\d+) items in ([\d.]+)s", daemon.stderr)
        cid, name, common = pick_cluster_and_words(db, now, args.seed)
        commands = cli_commands()
        queries = {"clusters list": ["clusters", "list"],
                   "clusters list --json": ["clusters", "list", "--json"],
                   f"clusters show {cid}": ["clusters", "show", str(cid)]}  # fmt: skip
        if "search" in commands:
            queries[f"search {name}"] = ["search", name]
            queries[f"search {common} (most items)"] = ["search", common]
        if "stats" in commands:
            queries["stats"] = ["stats"]
        queries["digest -o -"] = ["digest", "-o", "-"]
        q = time_queries(cfg, db, queries)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = {"built": built, "db_mb": round(size / 2**20), **start,
              "daemon_once_s": round(daemon.wall, 1), "daemon_peak_rss_mb": daemon.peak_rss_mb,
              "daemon_log_rebuild": m.groups() if m else None, "queries": q}  # fmt: skip
    worst = max(v["in_process_ms"] for v in q.values() if v["argv"])
    verdicts = [
        (f"daemon peak RSS < {TARGET_RSS_MB} MB ({built['items']:,} stored, {start['indexed']:,} indexed)",
         f"{daemon.peak_rss_mb:.0f} MB", "ok" if daemon.peak_rss_mb < TARGET_RSS_MB else "MISSED"),
        (f"every query < {TARGET_QUERY_MS} ms (in-process)", f"worst {worst:.0f} ms",
         "ok" if worst < TARGET_QUERY_MS else "MISSED"),
    ]  # fmt: skip
    result["targets"] = verdicts
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(table(
        ("items", "clusters", "multi", "signed (window)", "DB MB", "build s (items/sign/FTS/marks)",
         "start-up s", "indexed", "index B/item", "RSS growth MB", "run --once s", "daemon peak RSS MB"),
        [(f"{built['items']:,}", f"{built['clusters']:,}", f"{built['multi_clusters']:,}",
          f"{built['signed']:,}", result["db_mb"],
          f"{built['load_items_s']:.0f}/{built['sign_s']:.0f}/{built['fts_rebuild_s']:.0f}"
          f"/{built['backfill_s']:.0f}",
          f"{start['startup_s']:.2f}", f"{start['indexed']:,}", start["index_bytes_per_item"],
          f"{start['rss_growth_mb']:.0f}", f"{daemon.wall:.1f}", f"{daemon.peak_rss_mb:.0f}")],
    ))  # fmt: skip
    print()
    print(table(("query", "subprocess ms (median of 5)", "in-process ms (median of 5)", "output bytes", "verdict"),
                [(k, "" if v["subprocess_ms"] is None else v["subprocess_ms"],
                  "" if v["in_process_ms"] is None else v["in_process_ms"],
                  v["output_bytes"], "" if not v["argv"] else
                  ("ok" if v["in_process_ms"] < TARGET_QUERY_MS else "MISSED"))
                 for k, v in q.items()]))  # fmt: skip
    print()
    print(table(("target", "measured", "verdict"), verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
