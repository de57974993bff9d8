"""The two store backends side by side: cold `aggregator fetch` runs and the write path's
cost per item, on SQLite and on PostgreSQL.

1. demo: the six bundled sample feeds (aggregator.demo's server), one cold
   `python -m aggregator --config feeds.yaml --db TARGET fetch` per backend;
2. local: N feeds of bench/workload.py (default 300; 50 entries each, ~20% copies, no
   added latency), a cold fetch and then a warm one (all 304) per backend;
   each run: wall time, CPU of the CLI's process tree, and on PostgreSQL the server's CPU
   (postmaster and backends, from /proc: the backends have exited and been reaped by then);
3. write path, in this process: the same feeds already fetched, parsed and signed, written
   as the poll writes them (Poller._store_document: one transaction per feed with its
   cluster assignment, feed state and fetch log), then the full-text indexing of all of
   them (Store.index_search); microseconds per stored item, client CPU per item, and the
   server's CPU per item on PostgreSQL.

PostgreSQL is a throwaway server of this script's own (tests/pgserver.py) on a unix socket,
with fsync on and synchronous_commit off: a commit is not waited for on disk, which is what
SQLite's synchronous=NORMAL in WAL mode gives (a crash loses the last commits, never
consistency). `--sync-commit` waits for each commit's WAL flush instead, as PostgreSQL's
default does.

Run (from the repo root):
    .venv/bin/python bench/backends.py               # demo, 300 local feeds, ~3 min
    .venv/bin/python bench/backends.py --quick       # demo, 20 feeds
    options: --feeds N  --seed S  --sync-commit  --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from e2e import CLK_TCK, run_tree  # noqa: E402 - bench scripts are not a package
from fetch_200 import REPO
from workload import FeedServer, Workload, feed_body, write_config

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tests/pgserver.py: the throwaway server

from pgserver import PostgresServer  # noqa: E402

from aggregator.config import dump_yaml, load_config  # noqa: E402
from aggregator.demo import OUTLETS, serve_sample_feeds  # noqa: E402
from aggregator.records import FetchResult, FetchStatus  # noqa: E402
from aggregator.service.clustering import Clusterer  # noqa: E402
from aggregator.service.poll import Poller, process_document  # noqa: E402
from aggregator.store.database import Store  # noqa: E402
from aggregator.timeutil import utcnow  # noqa: E402

BACKENDS = ("sqlite", "postgresql")


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def server_cpu(server: PostgresServer) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster, its live children and
    the children it has reaped (utime, stime, cutime, cstime in /proc/PID/stat)."""
    root = server.pid
    total = _stat(root, reaped=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _parent(int(entry.name)) == root:
            total += _stat(int(entry.name), reaped=True)
    return total


def _fields(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return []


def _parent(pid: int) -> int:
    fields = _fields(pid)
    return int(fields[1]) if fields else -1


def _stat(pid: int, reaped: bool) -> float:
    fields = _fields(pid)
    if not fields:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
    return ticks / CLK_TCK


class Targets:
    """A fresh database of each backend per run: an SQLite file in `work`, a new database
    on the server."""

    def __init__(self, work: Path, server: PostgresServer):
        self.work, self.server, self.n = work, server, 0

    def new(self, backend: str) -> str:
        self.n += 1
        if backend == "sqlite":
            return str(self.work / f"run{self.n}.db")
        return self.server.new_database(f"run{self.n}")


def cli_fetch(cfg: Path, target: str, server: PostgresServer | None) -> dict:
    """One `aggregator fetch` as a subprocess: wall, CLI CPU, server CPU."""
    before = server_cpu(server) if server else 0.0
    run = run_tree(
        [sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", target, "fetch"]
    )
    if run.returncode != 0:
        sys.stderr.write(run.stderr[-4000:])
        raise SystemExit(f"aggregator fetch failed with exit code {run.returncode}")
    time.sleep(0.2)  # the backend's exit reaped, its CPU in the postmaster's cutime
    result = {"wall_s": round(run.wall, 2), "cpu_s": round(run.cpu, 2)}
    if server:
        result["server_cpu_s"] = round(server_cpu(server) - before, 2)
    return result


def stored_items(target: str) -> int:
    store = Store.open(target)
    try:
        return store.count("items")
    finally:
        store.close()


def bench_demo(work: Path, targets: Targets) -> dict:
    out: dict = {}
    with serve_sample_feeds() as base:
        cfg = work / "demo.yaml"
        feeds = [{"url": base + o.file, "name": o.name, "tags": list(o.tags)} for o in OUTLETS]
        cfg.write_text(
            dump_yaml({"settings": {"parse_workers": 0}, "feeds": feeds}), encoding="utf-8"
        )
        for backend in BACKENDS:
            target = targets.new(backend)
            run = cli_fetch(cfg, target, targets.server if backend == "postgresql" else None)
            run["items"] = stored_items(target)
            out[backend] = run
            log(f"demo {backend}: {run}")
    return out


def bench_local(work: Path, targets: Targets, w: Workload) -> dict:
    out: dict = {}
    with FeedServer(w, work / "site", latency=None) as srv:
        cfg = work / "local.yaml"
        write_config(cfg, srv.urls)
        for backend in BACKENDS:
            target = targets.new(backend)
            server = targets.server if backend == "postgresql" else None
            cold = cli_fetch(cfg, target, server)
            cold["items"] = stored_items(target)
            warm = cli_fetch(cfg, target, server)
            out[backend] = {"cold": cold, "warm": warm}
            log(f"local {backend}: cold {cold}, warm {warm}")
    return out


def bench_write_path(work: Path, targets: Targets, w: Workload) -> dict:
    """Poller._store_document over the feeds parsed and signed beforehand (not timed)."""
    urls = [f"http://127.0.0.{2 + i % 64}/{w.filename(i)}" for i in range(w.feeds)]
    cfg = work / "write.yaml"
    write_config(cfg, urls)
    config = load_config(cfg)
    now = utcnow()
    docs = []
    for i, url in enumerate(urls):
        body, _ = feed_body(w, i, url)
        docs.append(
            process_document(body, {"content-type": "application/xml"}, now, config.settings.dedup,
                             config.settings.stories.enabled)
        )
    items = sum(len(d.feed.items) for d in docs)
    out: dict = {"items": items}
    for backend in BACKENDS:
        server = targets.server if backend == "postgresql" else None
        store = Store.open(targets.new(backend))
        try:
            feeds = {f.url: f for f in store.sync_feeds(config, now)}
            clusterer = Clusterer(config.settings.dedup)
            clusterer.load(store, now)
            poller = Poller(config, store, fetcher=None, clusters=clusterer)  # type: ignore[arg-type]
            cpu0, srv0, t0 = (
                time.process_time(),
                server_cpu(server) if server else 0.0,
                time.perf_counter(),
            )
            for url, doc in zip(urls, docs, strict=True):
                fetch = FetchResult(url=url, status=FetchStatus.OK, fetched_at=now, http_status=200,
                                    etag='"1"', elapsed=0.01)  # fmt: skip
                poller._store_document(feeds[url], fetch, doc.feed, doc.signatures, doc.story_terms)
            write_s, write_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            t1 = time.perf_counter()
            store.index_search()
            index_s = time.perf_counter() - t1
            srv = (server_cpu(server) - srv0) if server else None
            stored = store.count("items")
        finally:
            store.close()
        assert stored == items, (backend, stored, items)
        row = {"write_us_per_item": round(1e6 * write_s / items, 1),
               "client_cpu_us_per_item": round(1e6 * write_cpu / items, 1),
               "index_us_per_item": round(1e6 * index_s / items, 1),
               "lock_wait_s": round(store.lock_wait, 3)}  # fmt: skip
        if srv is not None:
            row["server_cpu_us_per_item"] = round(1e6 * srv / items, 1)
        out[backend] = row
        log(f"write path {backend}: {row}")
    return out


def report(res: dict) -> str:
    lines = [f"PostgreSQL {res['pg_version']} (fsync on, synchronous_commit {res['synchronous_commit']}), "
             f"unix socket; SQLite WAL, synchronous=NORMAL", ""]  # fmt: skip
    lines.append(
        f"{'run':<28}{'backend':<12}{'items':>7}{'wall s':>9}{'CLI CPU s':>11}{'server CPU s':>14}"
    )

    def row(name: str, backend: str, r: dict, items: int | str = "") -> None:
        server = r.get("server_cpu_s", "")
        lines.append(
            f"{name:<28}{backend:<12}{items!s:>7}{r['wall_s']:>9}{r['cpu_s']:>11}{server!s:>14}"
        )

    for backend, r in res["demo"].items():
        row("demo feeds, cold fetch", backend, r, r["items"])
    n = res["feeds"]
    for backend, r in res["local"].items():
        row(f"{n} local feeds, cold fetch", backend, r["cold"], r["cold"]["items"])
        row(f"{n} local feeds, warm (304)", backend, r["warm"])
    wp = res["write_path"]
    lines += ["", f"write path ({wp['items']} items, one transaction per feed of 50: insert + cluster + feed state):",
              f"{'backend':<12}{'us/item':>9}{'client CPU us':>15}{'server CPU us':>15}{'search index us':>17}"]  # fmt: skip
    for backend in BACKENDS:
        r = wp[backend]
        lines.append(f"{backend:<12}{r['write_us_per_item']:>9}{r['client_cpu_us_per_item']:>15}"
                     f"{r.get('server_cpu_us_per_item', ''):>15}{r['index_us_per_item']:>17}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--feeds", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="20 local feeds (smoke run)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--sync-commit", action="store_true", help="PostgreSQL waits for each commit's WAL flush"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    n = 20 if args.quick else args.feeds
    w = Workload(n, args.seed)
    sync = "on" if args.sync_commit else "off"
    settings = {"fsync": "on", "synchronous_commit": sync, "full_page_writes": "on"}
    with (
        tempfile.TemporaryDirectory(prefix="agg-backends-") as tmp,
        PostgresServer(settings) as server,
    ):
        work = Path(tmp)
        targets = Targets(work, server)
        res = {"feeds": n, "synchronous_commit": sync}
        with server._admin() as admin:
            res["pg_version"] = admin.execute("SHOW server_version").fetchone()[0]
        res["demo"] = bench_demo(work, targets)
        res["local"] = bench_local(work, targets, w)
        res["write_path"] = bench_write_path(work, targets, w)
    print(json.dumps(res, indent=2) if args.json else report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
