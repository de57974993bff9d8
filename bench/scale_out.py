"""Scale-out benchmark: 1, 2 and 4 `aggregator run` workers on one PostgreSQL database, and
one daemon on an SQLite file, polling the same N local feeds (bench/workload.py).

Per configuration (a fresh database, a fresh workload server: the same bytes each time):
1. cold: the workers are spawned together on an empty database and poll every feed once;
   wall time from the spawn until every feed has its fetch_log row and every worker has
   logged the poll lines covering them (Python start-up and the index load included);
2. steady: POST /_control/churn (10% of the feeds gain 5 entries), then every feed made due
   at once (one UPDATE of next_fetch_at), until every feed was fetched again (the rest
   answer 304); up to one check_every (1 s) of the wall is the workers noticing.
Measured per phase: wall, items stored, items/s, CPU of the workers' process trees
(utime+stime of each worker, its forkserver and parse workers, from /proc, children that
exited included), CPU per stored item, the time the workers waited for the store's write
lock (the `lock_wait=` of their poll lines, summed; PostgreSQL only: SQLite's single
writer never waits), PostgreSQL's CPU (every server process, from /proc), and how the
feeds were shared (each worker's `due=`).

Settings are the defaults (concurrency 64, per_host 2, parse_workers 2 per worker, lease
600 s) with check_every 1s, interval 1h (no second due time in a phase) and http off.
PostgreSQL: a throwaway server (tests/pgserver.py) with fsync and full-page writes on and
synchronous_commit off (a commit does not wait for its WAL flush: the durability of
SQLite's synchronous=NORMAL in WAL mode, which the SQLite daemon uses).

    .venv/bin/python bench/scale_out.py                 # 2,000 feeds x 50 entries; ~20 min on 2 cores
    .venv/bin/python bench/scale_out.py --quick         # 200 feeds x 20 entries, 1-2 workers
    options: --feeds N  --entries N  --workers 1,2,4  --latency 50  --seed S  --vocab  --json  --keep DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fetch_200 import REPO, _tree  # noqa: E402 - bench scripts are not a package
from workload import FeedServer, Workload, parse_latency, text_kind, write_config, write_site

sys.path.insert(0, str(REPO / "tests"))
from pgserver import PostgresServer  # noqa: E402 - the tests' throwaway server

CLK_TCK = os.sysconf("SC_CLK_TCK")
PHASE_TIMEOUT = 3600.0
SETTINGS = {"check_every": "1s", "interval": "1h", "http": "off"}
PG_SETTINGS = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "off"}
POLL_LINE = re.compile(r"poll: due=(\d+) .*?new_items=(\d+) .*?errors=(\d+) duration=([\d.]+)s"
                       r"(?: batches=(\d+) lock_wait=([\d.]+)s)?")  # fmt: skip


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc


def tree_cpu(root: int) -> float:
    """CPU seconds of a process tree: each live process's utime+stime plus what its
    children that ended and were reaped used (cutime+cstime): every process counted once."""
    total = 0
    for pid in _tree(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])
    return total / CLK_TCK


# ---------------------------------------------------------------- one configuration


@dataclass
class Phase:
    backend: str
    workers: int
    phase: str
    wall_s: float
    items: int
    items_per_s: float
    worker_cpu_s: float
    cpu_ms_per_item: float | None
    lock_wait_s: float | None
    pg_cpu_s: float | None
    shares: list[int] = field(default_factory=list)
    poll_errors: int = 0


class Database:
    """The progress of a phase as the database records it."""

    def __init__(self, target: str):
        self.target = target

    def one(self, sql: str, *params) -> object:
        if self.target.startswith("postgresql://"):
            import psycopg

            with psycopg.connect(self.target, autocommit=True) as conn:
                return conn.execute(sql.replace("?", "%s"), params or None).fetchone()[0]
        conn = sqlite3.connect(f"file:{self.target}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchone()[0]
        finally:
            conn.close()

    def fetched_since(self, stamp: str) -> int:
        return int(
            self.one("SELECT count(DISTINCT feed_id) FROM fetch_log WHERE fetched_at >= ?", stamp)
        )

    def items(self) -> int:
        return int(self.one("SELECT count(*) FROM items"))

    def all_due(self, stamp: str) -> None:
        sql = "UPDATE feeds SET next_fetch_at = ?"
        if self.target.startswith("postgresql://"):
            import psycopg

            with psycopg.connect(self.target, autocommit=True) as conn:
                conn.execute(sql.replace("?", "%s"), (stamp,))
            return
        conn = sqlite3.connect(self.target, timeout=30)
        try:
            conn.execute(sql, (stamp,))
            conn.commit()
        finally:
            conn.close()


class Workers:
    """N `python -m aggregator run` processes on one database, their logs in files."""

    def __init__(self, n: int, cfg: Path, db: str, work: Path):
        self.logs = [work / f"worker-{i}.log" for i in range(n)]
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        self.procs = []
        for path in self.logs:
            with open(path, "wb") as err:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", db, "run"],
                    cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                ))  # fmt: skip

    def cpu(self) -> float:
        return sum(tree_cpu(p.pid) for p in self.procs)

    def lines(self) -> list[list[tuple]]:
        """Each worker's poll lines so far: (due, new items, errors, duration, lock wait)."""
        out = []
        for path in self.logs:
            text = path.read_text(errors="replace")
            out.append([(int(m[1]), int(m[2]), int(m[3]), float(m[4]), float(m[6] or 0))
                        for m in POLL_LINE.finditer(text)])  # fmt: skip
        return out

    def check_alive(self) -> None:
        for proc, path in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = path.read_text(errors="replace")[-3000:]
                raise SystemExit(f"worker {proc.pid} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_phase(name: str, backend: str, group: Workers, db: Database, feeds: int, stamp: str,
              started: float, cpu_before: float, pg: PostgresServer | None, pg_before: float,
              items_before: int, lines_before: list[int]) -> Phase:  # fmt: skip
    """Wait until every feed was fetched since `stamp` and the poll lines cover them."""
    deadline = started + PHASE_TIMEOUT
    while True:
        group.check_alive()
        lines = [w[n:] for w, n in zip(group.lines(), lines_before, strict=True)]
        polled = sum(due for w in lines for due, *_ in w)
        if polled >= feeds and db.fetched_since(stamp) >= feeds:
            break
        if time.perf_counter() > deadline:
            raise SystemExit(
                f"{name}: not done after {PHASE_TIMEOUT:.0f}s ({polled} of {feeds} feeds)"
            )
        time.sleep(0.2)
    wall = time.perf_counter() - started
    cpu = group.cpu() - cpu_before
    items = db.items() - items_before
    pg_cpu = tree_cpu(pg.pid) - pg_before if pg else None
    return Phase(
        backend, len(group.procs), name, round(wall, 2), items, round(items / wall, 1), round(cpu, 2),
        round(cpu / items * 1000, 2) if items else None,
        round(sum(w for ws in lines for *_, w in ws), 2) if pg else None,
        round(pg_cpu, 2) if pg_cpu is not None else None,
        [sum(due for due, *_ in ws) for ws in lines], sum(e for ws in lines for _, _, e, *_ in ws),
    )  # fmt: skip


def configuration(backend: str, n: int, w: Workload, site: Path, latency, work: Path,
                  pg: PostgresServer | None) -> list[Phase]:  # fmt: skip
    """A cold and a steady phase of `n` workers on a fresh database."""
    from aggregator.timeutil import iso, utcnow

    work.mkdir(parents=True, exist_ok=True)
    target = pg.new_database() if pg else str(work / "agg.db")
    db = Database(target)
    with FeedServer(w, site, latency) as server:
        cfg = work / "feeds.yaml"
        write_config(cfg, server.urls, {**SETTINGS, "digest_path": str(work / "digest.xml")})
        pg_before = tree_cpu(pg.pid) if pg else 0.0
        started = time.perf_counter()
        group = Workers(n, cfg, target, work)
        try:
            cold = run_phase("cold", backend, group, db, w.feeds, "", started, 0.0, pg, pg_before,
                             0, [0] * n)  # fmt: skip
            log(
                f"  {backend} x{n} cold: {cold.wall_s:.1f}s, {cold.items} items, shares {cold.shares}"
            )
            changed = server.churn()
            time.sleep(1.5)  # the cold poll's last writes (search index) are over
            lines_before = [len(ws) for ws in group.lines()]
            cpu_before, pg_before, items_before = (
                group.cpu(),
                tree_cpu(pg.pid) if pg else 0.0,
                db.items(),
            )
            stamp = iso(utcnow())
            started = time.perf_counter()
            db.all_due(stamp)
            steady = run_phase("steady", backend, group, db, w.feeds, stamp, started, cpu_before, pg,
                               pg_before, items_before, lines_before)  # fmt: skip
            log(f"  {backend} x{n} steady ({len(changed)} feeds changed): {steady.wall_s:.1f}s, "
                f"{steady.items} items, shares {steady.shares}")  # fmt: skip
        finally:
            group.stop()
    if pg:
        pg.drop_database(target)
    return [cold, steady]


# ---------------------------------------------------------------- output


COLUMNS = (("backend", "backend"), ("workers", "workers"), ("phase", "phase"), ("wall s", "wall_s"),
           ("items", "items"), ("items/s", "items_per_s"), ("worker CPU s", "worker_cpu_s"),
           ("CPU ms/item", "cpu_ms_per_item"), ("lock wait s", "lock_wait_s"),
           ("PG CPU s", "pg_cpu_s"), ("feeds per worker", "shares"))  # fmt: skip


def table(rows: list[Phase]) -> str:
    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, list):
            return "/".join(map(str, value))
        return f"{value:,}" if isinstance(value, int) else str(value)

    cells = [[title for title, _ in COLUMNS]] + [
        [cell(getattr(r, key)) for _, key in COLUMNS] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(c.rjust(wd) for c, wd in zip(row, widths, strict=True)) for row in cells
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--feeds", type=int, default=2000)
    ap.add_argument("--entries", type=int, default=50, help="entries per feed (50)")
    ap.add_argument("--workers", default="1,2,4", help="PostgreSQL worker counts (1,2,4)")
    ap.add_argument("--latency", default="50", help="per-request delay in ms (50; e.g. 50-300)")
    ap.add_argument("--quick", action="store_true", help="200 feeds x 20 entries, 1 and 2 workers")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vocab", action="store_true", help="fixed vocabulary, not the corpus")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--keep", type=Path, help="work dir to keep (feeds, configs, logs, SQLite DB)")
    args = ap.parse_args(argv)
    if args.quick:
        args.feeds, args.entries, args.workers = 200, 20, "1,2"
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    w = Workload(args.feeds, args.seed, entries=args.entries, vocab=args.vocab)
    work = args.keep or Path(tempfile.mkdtemp(prefix="scale-out-"))
    latency = parse_latency(args.latency)
    load_before = os.getloadavg()
    rows: list[Phase] = []
    log(f"{w.feeds} feeds x {w.entries} entries ({text_kind(w.vocab)}), latency {args.latency} ms, "
        f"work dir {work}")  # fmt: skip
    try:
        site = work / "site"
        write_site(w, site)  # rendered once; each configuration serves the same files
        rows += configuration("sqlite", 1, w, site, latency, work / "sqlite-1", None)
        with PostgresServer(PG_SETTINGS) as pg:
            for n in counts:
                rows += configuration(
                    "postgresql", n, w, site, latency, work / f"postgresql-{n}", pg
                )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "feeds": w.feeds, "entries": w.entries, "latency_ms": args.latency, "text": text_kind(w.vocab),
        "quick": args.quick, "cores": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
        "postgres_settings": PG_SETTINGS, "rows": [asdict(r) for r in rows],
    }  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{w.feeds} feeds x {w.entries} entries, latency {args.latency} ms, {os.cpu_count()} cores, "
              f"load average before {load_before[0]:.1f}, after {report['load_after'][0]:.1f}")  # fmt: skip
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
