"""End-to-end benchmark: cold, warm and steady-state polls of N local feeds with the real
`aggregator fetch`, next to a feedparser floor and a peer (lemon24/reader) on the same feeds.

For each N (`--sizes 100,1000,10000`), feeds come from bench/workload.py (RSS/Atom, 50
entries of 150-600 words, ~20% republished across feeds), served by its asyncio server in
a separate process on 64 loopback hosts (127.0.0.2-65), each answer delayed by the latency
profile (default: 50-300 ms uniform up to 1,000 feeds, 50 ms above). Then:

1. cold: empty DB, `python -m aggregator --config feeds.yaml --db DB fetch` as a subprocess
   (default settings: concurrency 64, per_host 2, parse_workers 2): wall time, feeds/s,
   items/s, peak RSS of the process tree (summed, /proc every 50 ms), CPU time of the tree;
2. warm: the same command again, every feed answers 304;
3. steady: POST /_control/churn (10% of the feeds gain 5 entries), the same command again;
4. floor: feedparser.parse over the same bytes in this process, one core, with the options
   we use (sanitize_html and resolve_relative_uris off: the cheapest feedparser call), and
   with its defaults on a sample; the cold poll as a ratio to the former;
5. peer: lemon24/reader (`pip install -e '.[bench]'`) in a subprocess per run: add the
   feeds to a new DB and `update_feeds(workers=W, scheduled=False)` (W = 1, its default,
   and 4, 16, 32), cold and then warm; wall time of the subprocess, like ours (both pay
   Python start-up); ratios ours/reader's (only at `--reader-at` sizes, default 1000);
   without reader installed the peer is skipped and the report says so (`reader_skipped`
   in the JSON);
6. stage profile (at `--profile-at` sizes, default 100 and 1000): the same cold poll
   in-process under cProfile with parse_workers 0, so parsing, normalising and signing run
   in this process (in the event loop's thread pool; each call is profiled in its thread and
   merged); cumulative time of the stage functions, per item, and how it grows with N.

Targets printed next to the figures: cold <= 1.5x floor; at 1,000 feeds with 50-300 ms
latency: warm >= 5x faster than reader's best W, cold >= 2x faster than its best and >= 5x
faster than its default (W=1); warm poll of 10,000 feeds (all 304, 50 ms) < 60 s.

Run (from the repo root; the machine should be otherwise idle):
    .venv/bin/python bench/e2e.py --sizes 100,1000,10000      # ~40 min
    .venv/bin/python bench/e2e.py --quick                     # 50 feeds, < 1 min (CI smoke)
    options: --sizes  --latency 50-300  --reader-at 1000  --reader-workers 1,4,16,32
             --profile-at 100,1000  --floor-max 1000  --seed S  --vocab  --json  --keep DIR
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import os
import pstats
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fetch_200 import REPO, TreeSampler, _tree, mb, summary  # noqa: E402 - not a package
from workload import FeedServer, Workload, parse_latency, text_kind, write_config

CLI_TIMEOUT = 3600.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_SIZES = (100, 1000, 10000)
READER_WORKERS = (1, 4, 16, 32)
FEEDPARSER_OPTIONS = {"sanitize_html": False, "resolve_relative_uris": False}
DEFAULTS_SAMPLE = 100  # feeds parsed with feedparser's default options
TARGET_FLOOR = 1.5
TARGET_WARM_VS_READER, TARGET_COLD_VS_BEST, TARGET_COLD_VS_DEFAULT = 5.0, 2.0, 5.0
TARGET_WARM_10K_S = 60.0
STAGES = (  # (label, file suffix, function name); cumulative time in cProfile
    ("fetch (Fetcher.fetch)", "aggregator/ingest/fetch.py", "fetch"),
    ("parse (parse_feed)", "aggregator/ingest/parse.py", "parse_feed"),
    ("normalize (normalize_entries)", "aggregator/ingest/normalize.py", "normalize_entries"),
    ("sign (Signer.sign)", "aggregator/dedup/", "sign"),
    ("cluster (Clusterer.assign)", "aggregator/service/clustering.py", "assign"),
    ("store (_store_document - assign)", "aggregator/service/poll.py", "_store_document"),
    ("store 304/errors (_store_failure)", "aggregator/service/poll.py", "_store_failure"),
    ("index load (Clusterer.load)", "aggregator/service/clustering.py", "load"),
    ("sync_feeds", "aggregator/store/database.py", "sync_feeds"),
)


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- subprocess runs


class CpuSampler(TreeSampler):
    """TreeSampler that also keeps each process's last seen CPU time (utime + stime)."""

    def __init__(self, root: int):
        super().__init__(root)
        self.cpu: dict[int, float] = {}

    def sample(self) -> None:
        super().sample()
        for pid in _tree(self.root):
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                self.cpu[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
            except (OSError, IndexError, ValueError):
                pass


@dataclass
class Run:
    wall: float
    cpu: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_tree(cmd: list[str], timeout: float = CLI_TIMEOUT) -> Run:
    """Run `cmd` from the repo root; wall time, CPU and peak summed RSS of its tree."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)
        sampler = CpuSampler(proc.pid)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        wall = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = (f.read().decode("utf-8", "replace") for f in (out, err))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    waited = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu = max(waited, sum(sampler.cpu.values()))
    return Run(wall, cpu, mb(sampler.max_sum_kb), rc, stdout, stderr)


def aggregator_fetch(cfg: Path, db: Path) -> tuple[Run, dict[str, int]]:
    run = run_tree([sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), "fetch"])
    if run.returncode != 0:
        sys.stderr.write(run.stderr[-4000:])
        raise SystemExit(f"aggregator fetch failed with exit code {run.returncode}")
    return run, summary(run.stderr)


def db_counts(db: Path) -> tuple[int, int, int]:
    """(items, clusters, clusters with 2+ items)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        items = conn.execute("select count(*) from items").fetchone()[0]
        clusters = conn.execute("select count(*) from clusters").fetchone()[0]
        multi = conn.execute("select count(*) from clusters where size > 1").fetchone()[0]
    finally:
        conn.close()
    return items, clusters, multi


# ---------------------------------------------------------------- reader (the peer)


def reader_child(db: str, urls_file: str, workers: int) -> int:
    """`e2e.py --reader-child`: add the feeds, update them once, print timings as JSON."""
    t0 = time.perf_counter()
    from reader import make_reader

    r = make_reader(db)
    t1 = time.perf_counter()
    for url in Path(urls_file).read_text().split():
        r.add_feed(url, exist_ok=True)
    t2 = time.perf_counter()
    r.update_feeds(workers=workers, scheduled=False)
    t3 = time.perf_counter()
    counts = r.get_entry_counts()
    broken = sum(1 for f in r.get_feeds() if f.last_exception)
    r.close()
    print(json.dumps({"import_s": t1 - t0, "add_s": t2 - t1, "update_s": t3 - t2,
                      "entries": counts.total, "broken_feeds": broken}))  # fmt: skip
    return 0


INSTALL_READER = "pip install -e '.[bench]'"


@functools.cache
def reader_missing() -> str | None:
    """None when lemon24/reader can run here, else why not (said once, in plain words)."""
    try:
        import reader  # noqa: F401
    except ImportError as exc:
        why = f"reader is not installed ({exc})"
    else:
        try:
            import reader._vendor.feedparser  # noqa: F401 - its vendored feedparser needs sgmllib
        except ImportError as exc:
            why = f"reader is installed but not usable ({exc}; its feedparser needs sgmllib3k)"
        else:
            return None
    why += f"; to compare with it: {INSTALL_READER} (installs reader>=3 and sgmllib3k)"
    log(f"peer skipped: {why}")
    return why


def run_reader(work: Path, urls: list[str], workers: int) -> dict:
    db = work / f"reader-w{workers}.sqlite"
    for p in work.glob(f"reader-w{workers}.sqlite*"):
        p.unlink()
    urls_file = work / "urls.txt"
    urls_file.write_text("\n".join(urls) + "\n")
    out = {}
    for phase in ("cold", "warm"):
        run = run_tree([sys.executable, __file__, "--reader-child", str(db), str(urls_file), str(workers)])
        if run.returncode != 0:
            sys.stderr.write(run.stderr[-3000:])
            raise SystemExit(f"reader (workers={workers}) failed with exit code {run.returncode}")
        inner = json.loads(run.stdout.strip().splitlines()[-1])
        out[phase] = {"wall_s": round(run.wall, 2), "update_s": round(inner["update_s"], 2),
                      "cpu_s": round(run.cpu, 1), "peak_rss_mb": run.peak_rss_mb,
                      "entries": inner["entries"], "broken_feeds": inner["broken_feeds"]}  # fmt: skip
        log(f"  reader W={workers} {phase}: {run.wall:.1f}s (update_feeds {inner['update_s']:.1f}s), "
            f"{inner['entries']} entries, {inner['broken_feeds']} broken")  # fmt: skip
    return out


# ---------------------------------------------------------------- floor


def floor(site: Path, w: Workload, limit: int) -> dict:
    """feedparser over the served bytes, one core: all feeds (or every k-th, scaled up)."""
    import feedparser

    step = max(1, -(-w.feeds // limit))
    sample = [site / w.filename(i) for i in range(0, w.feeds, step)]
    bodies = [p.read_bytes() for p in sample]
    t0 = time.process_time()
    entries = sum(len(feedparser.parse(b, **FEEDPARSER_OPTIONS).entries) for b in bodies)
    ours = (time.process_time() - t0) * w.feeds / len(bodies)
    few = bodies[: max(1, min(DEFAULTS_SAMPLE, len(bodies)))]
    t0 = time.process_time()
    for b in few:
        feedparser.parse(b)
    defaults = (time.process_time() - t0) * w.feeds / len(few)
    return {"floor_s": round(ours, 2), "floor_defaults_s": round(defaults, 2),
            "floor_feeds_parsed": len(bodies), "floor_entries_parsed": entries,
            "floor_scaled": step > 1}  # fmt: skip


# ---------------------------------------------------------------- stage profile


ON_MAIN = "_timed on the main thread"  # outermost timed calls there: the rest is fetching
_depth = threading.local()


def nested() -> bool:
    return getattr(_depth, "n", 0) > 0


def _timed(acc: dict[str, float], lock: threading.Lock, label: str, fn):
    """`fn` wrapped to add its thread CPU time to acc[label]."""

    def wrapper(*args, **kwargs):
        t0 = time.thread_time()
        _depth.n = getattr(_depth, "n", 0) + 1
        try:
            return fn(*args, **kwargs)
        finally:
            _depth.n -= 1
            dt = time.thread_time() - t0
            with lock:
                acc[label] = acc.get(label, 0.0) + dt
                if threading.current_thread() is threading.main_thread() and not nested():
                    acc[ON_MAIN] = acc.get(ON_MAIN, 0.0) + dt

    return wrapper


def profile_cold(cfg: Path, db: Path, use_cprofile: bool) -> dict:
    """The cold poll in-process with parse_workers 0. Without cProfile: thread CPU time
    around each stage function (a few calls per feed or item, so the overhead is small).
    With cProfile (timer: thread CPU time, since the pool's threads wait for each other's
    GIL): cumulative time of the stage functions and the largest functions inside them."""
    import aggregator.dedup.signature as signature
    import aggregator.service.clustering as clustering
    import aggregator.service.poll as poll
    import aggregator.store.database as store_mod
    from aggregator.config import load_config
    from aggregator.service import app

    config = load_config(cfg)
    acc: dict[str, float] = {}
    lock = threading.Lock()
    patches = [  # (owner, attribute, label)
        (poll, "process_document", "worker thread total (process_document)"),
        (poll, "parse_feed", "parse (parse_feed)"),
        (poll, "normalize_entries", "normalize (normalize_entries)"),
        (signature.Signer, "sign", "sign (Signer.sign)"),
        (clustering.Clusterer, "assign", "cluster (Clusterer.assign)"),
        (poll.Poller, "_store_document", "store + cluster (_store_document)"),
        (poll.Poller, "_store_failure", "store 304/errors (_store_failure)"),
        (clustering.Clusterer, "load", "index load (Clusterer.load)"),
        (store_mod.Store, "sync_feeds", "sync_feeds"),
    ]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    worker_profiles: list[cProfile.Profile] = []
    if use_cprofile:

        def profiled(original):
            def run(*args, **kwargs):
                prof = cProfile.Profile(time.thread_time)
                prof.enable()
                try:
                    return original(*args, **kwargs)
                finally:
                    prof.disable()
                    with lock:
                        worker_profiles.append(prof)

            return run

        # parsing runs in the pool's threads, the writes on the poll's writer thread: each
        # call gets its own profile in its thread, all merged below
        poll.process_document = profiled(poll.process_document)
        for owner, attr in ((poll.Poller, "_store_document"), (poll.Poller, "_store_failure")):
            setattr(owner, attr, profiled(getattr(owner, attr)))
    else:
        for owner, attr, label in patches:
            setattr(owner, attr, _timed(acc, lock, label, getattr(owner, attr)))
    store = store_mod.Store.open(db)
    main = cProfile.Profile(time.thread_time)
    try:
        t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
        if use_cprofile:
            main.enable()
        report = app.fetch_all(config, store)
        main.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        main_cpu = time.thread_time() - m0
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)
        store.close()
    result = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "items": report.new_items,
              "errors": report.errors}  # fmt: skip
    if not use_cprofile:
        stages = {
            # the writes run on the poll's writer thread: subtract only what ran here
            "fetch + event loop (main thread rest)": main_cpu - acc.get(ON_MAIN, 0.0),
            "parse (parse_feed)": acc.get("parse (parse_feed)", 0.0),
            "normalize (normalize_entries)": acc.get("normalize (normalize_entries)", 0.0),
            "sign (Signer.sign)": acc.get("sign (Signer.sign)", 0.0),
            "cluster (Clusterer.assign)": acc.get("cluster (Clusterer.assign)", 0.0),
            "store (_store_document - assign)": acc.get("store + cluster (_store_document)", 0.0)
            - acc.get("cluster (Clusterer.assign)", 0.0),
        }  # fmt: skip
        for k in ("store 304/errors (_store_failure)", "index load (Clusterer.load)", "sync_feeds"):
            stages[k] = acc.get(k, 0.0)
        worker = acc.get("worker thread total (process_document)", 0.0)
        stages["worker rest (process_document - parse/normalize/sign)"] = worker - sum(
            stages[k] for k in ("parse (parse_feed)", "normalize (normalize_entries)", "sign (Signer.sign)"))
        result["stages_s"] = {k: round(v, 3) for k, v in stages.items()}
        return result
    stats = pstats.Stats(main)
    for prof in worker_profiles:
        stats.add(prof)
    cum: dict[tuple[str, str], float] = {}
    for (filename, _, name), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        for _, suffix, fn in STAGES:
            if name == fn and filename.endswith(suffix):
                cum[(suffix, fn)] = cum.get((suffix, fn), 0.0) + ct
    stages = {label: cum.get((suffix, fn), 0.0) for label, suffix, fn in STAGES}
    stages["store (_store_document - assign)"] -= stages["cluster (Clusterer.assign)"]
    result["stages_s"] = {k: round(v, 3) for k, v in stages.items()}
    result["top_functions_s"] = {
        f"{Path(fn).parent.name}/{Path(fn).name}:{name}": round(v[2], 2)
        for (fn, _, name), v in sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:15]  # type: ignore[attr-defined]
    }  # own time (tottime)
    return result


# ---------------------------------------------------------------- one size


def bench_size(n: int, args, work: Path) -> dict:
    latency = parse_latency(args.latency or ("50" if n > 1000 else "50-300"))
    w = Workload(n, args.seed, vocab=args.vocab)
    site = work / "site"
    res: dict = {"feeds": n, "latency_ms": list(latency) if latency else None,
                 "text": text_kind(w.vocab)}  # fmt: skip
    with FeedServer(w, site, latency) as srv:
        res["xml_mb"] = round(srv.bytes / 1e6, 1)
        log(f"N={n}: {srv.bytes / 1e6:.0f} MB of feeds rendered in {srv.render_seconds:.1f}s; "
            f"server pid {srv.pid}, latency {latency} ms")  # fmt: skip
        cfg, db = work / "feeds.yaml", work / "bench.db"
        write_config(cfg, srv.urls)

        cold, cs = aggregator_fetch(cfg, db)
        items, clusters, multi = db_counts(db)
        res["cold"] = {"wall_s": round(cold.wall, 2), "feeds_per_s": round(n / cold.wall, 1),
                       "items_per_s": round(items / cold.wall, 1), "cpu_s": round(cold.cpu, 1),
                       "cpu_ms_per_item": round(1000 * cold.cpu / max(items, 1), 2),
                       "peak_rss_mb": cold.peak_rss_mb, "items": items, "clusters": clusters,
                       "multi_clusters": multi, "summary": cs}  # fmt: skip
        log(f"  cold: {cold.wall:.1f}s, {items} items, {clusters} clusters ({multi} multi), "
            f"CPU {cold.cpu:.0f}s, peak RSS {cold.peak_rss_mb:.0f} MB")  # fmt: skip

        warm, ws = aggregator_fetch(cfg, db)
        res["warm"] = {"wall_s": round(warm.wall, 2), "feeds_per_s": round(n / warm.wall, 1),
                       "cpu_s": round(warm.cpu, 1), "peak_rss_mb": warm.peak_rss_mb,
                       "all_304": ws.get("not_modified") == n, "summary": ws}  # fmt: skip
        log(f"  warm: {warm.wall:.1f}s, {ws}")

        res.update(floor(site, w, args.floor_max))
        res["cold_vs_floor"] = round(cold.wall / res["floor_s"], 2)
        log(f"  floor: feedparser {res['floor_s']:.1f}s (defaults {res['floor_defaults_s']:.1f}s)")

        if n in args.reader_at:
            if (why := reader_missing()) is None:
                res["reader"] = {w_: run_reader(work, srv.urls, w_) for w_ in args.reader_workers}
            else:
                res["reader_skipped"] = why

        if n in args.profile_at:
            pdb = work / "profile.db"
            pcfg = work / "profile.yaml"
            # generous timeouts: under cProfile the event loop runs slowly
            write_config(pcfg, srv.urls, {"parse_workers": 0, "timeout": "600s",
                                          "connect_timeout": "600s"})  # fmt: skip
            for key, use_cprofile in (("profile", False), ("cprofile", True)):
                if use_cprofile and n not in args.cprofile_at:
                    continue
                for p in work.glob("profile.db*"):
                    p.unlink()
                res[key] = profile_cold(pcfg, pdb, use_cprofile)
                log(f"  {key}: {res[key]['wall_s']}s wall, {res[key]['cpu_s']}s CPU, "
                    f"{res[key]['errors']} errors")  # fmt: skip

        changed = srv.churn()
        steady, ss = aggregator_fetch(cfg, db)
        res["steady"] = {"wall_s": round(steady.wall, 2), "changed_feeds": len(changed),
                         "cpu_s": round(steady.cpu, 1), "summary": ss}  # fmt: skip
        log(f"  steady: {steady.wall:.1f}s, {ss}")
        res["server"] = srv.stats()
    return res


# ---------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def targets(results: list[dict]) -> list[tuple[str, str, str]]:
    out = []
    for r in results:
        out.append((f"N={r['feeds']}: cold <= {TARGET_FLOOR}x floor",
                    f"{r['cold_vs_floor']:.2f}x", verdict(r["cold_vs_floor"] <= TARGET_FLOOR)))  # fmt: skip
        rd = r.get("reader")
        if rd:
            best_cold = min(v["cold"]["wall_s"] for v in rd.values())
            best_warm = min(v["warm"]["wall_s"] for v in rd.values())
            default = rd.get(1, rd[min(rd)])["cold"]["wall_s"]
            wr, cb, cd = (best_warm / r["warm"]["wall_s"], best_cold / r["cold"]["wall_s"],
                          default / r["cold"]["wall_s"])  # fmt: skip
            out += [
                (f"N={r['feeds']}: warm >= {TARGET_WARM_VS_READER:g}x faster than reader's best",
                 f"{wr:.1f}x", verdict(wr >= TARGET_WARM_VS_READER)),
                (f"N={r['feeds']}: cold >= {TARGET_COLD_VS_BEST:g}x faster than reader's best",
                 f"{cb:.1f}x", verdict(cb >= TARGET_COLD_VS_BEST)),
                (f"N={r['feeds']}: cold >= {TARGET_COLD_VS_DEFAULT:g}x faster than reader W=1",
                 f"{cd:.1f}x", verdict(cd >= TARGET_COLD_VS_DEFAULT)),
            ]  # fmt: skip
        if r["feeds"] >= 10000:
            out.append((f"N={r['feeds']}: warm (all 304, 50 ms) < {TARGET_WARM_10K_S:g}s",
                        f"{r['warm']['wall_s']:.1f}s",
                        verdict(r["warm"]["wall_s"] < TARGET_WARM_10K_S and r["warm"]["all_304"])))  # fmt: skip
    return out


def table(headers, rows) -> str:
    rows = [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(wd) for h, wd in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(wd) for c, wd in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _stage_table(profiled: list[dict], key: str) -> str:
    headers = ["stage"]
    for r in profiled:
        headers += [f"N={r['feeds']} s", "us/item", "share"]
    if len(profiled) > 1:
        headers.append(f"us/item N={profiled[-1]['feeds']} / N={profiled[0]['feeds']}")
    rows = []
    for label in [*profiled[0][key]["stages_s"], "total CPU (all threads)", "wall"]:
        row, per = [label], []
        for r in profiled:
            p = r[key]
            v = {"total CPU (all threads)": p["cpu_s"], "wall": p["wall_s"]}.get(label)
            v = p["stages_s"].get(label, 0.0) if v is None else v
            per.append(1e6 * v / max(p["items"], 1))
            share = f"{v / p['cpu_s']:.0%}" if label != "wall" and p["cpu_s"] else ""
            row += [f"{v:.2f}", f"{per[-1]:.0f}", share]
        if len(profiled) > 1:
            row.append(f"{per[-1] / per[0]:.2f}x" if per[0] else "")
        rows.append(row)
    return table(headers, rows)


def report(results: list[dict]) -> str:
    out = []
    out.append(table(
        ("feeds", "latency ms", "MB", "items", "clusters", "cold s", "feeds/s", "items/s",
         "CPU s", "CPU ms/item", "peak RSS MB", "warm s", "warm feeds/s", "steady s",
         "floor s", "cold/floor"),
        [(r["feeds"], "-".join(f"{x:g}" for x in r["latency_ms"]) if r["latency_ms"] else "0",
          r["xml_mb"], r["cold"]["items"], f"{r['cold']['clusters']} ({r['cold']['multi_clusters']} multi)",
          f"{r['cold']['wall_s']:.1f}", f"{r['cold']['feeds_per_s']:.0f}",
          f"{r['cold']['items_per_s']:.0f}", f"{r['cold']['cpu_s']:.0f}",
          f"{r['cold']['cpu_ms_per_item']:.2f}", f"{r['cold']['peak_rss_mb']:.0f}",
          f"{r['warm']['wall_s']:.1f}" + ("" if r["warm"]["all_304"] else " (not all 304)"),
          f"{r['warm']['feeds_per_s']:.0f}",
          f"{r['steady']['wall_s']:.1f}", f"{r['floor_s']:.1f}" + ("*" if r["floor_scaled"] else ""),
          f"{r['cold_vs_floor']:.2f}x") for r in results],
    ))  # fmt: skip
    if any(r["floor_scaled"] for r in results):
        out.append("* floor measured on every k-th feed and scaled to all of them")
    out.append("floor with feedparser's default options (sanitising, URI resolution): " + ", ".join(
        f"N={r['feeds']}: {r['floor_defaults_s']:.1f}s" for r in results))  # fmt: skip
    for r in results:
        if r.get("reader_skipped"):
            out.append(f"\nreader (lemon24/reader) at N={r['feeds']}: "
                       f"peer skipped: {r['reader_skipped']}")  # fmt: skip
        if not r.get("reader"):
            continue
        out.append(f"\nreader (lemon24/reader) at N={r['feeds']}, same feeds and latency; "
                   "subprocess wall time (update_feeds alone in brackets)")  # fmt: skip
        rows = [("aggregator", f"{r['cold']['wall_s']:.1f}", f"{r['warm']['wall_s']:.1f}",
                 f"{r['cold']['cpu_s']:.0f}", f"{r['cold']['peak_rss_mb']:.0f}", "", "")]  # fmt: skip
        for wk, v in sorted(r["reader"].items()):
            rows.append((f"reader W={wk}", f"{v['cold']['wall_s']:.1f} ({v['cold']['update_s']:.1f})",
                         f"{v['warm']['wall_s']:.1f} ({v['warm']['update_s']:.1f})",
                         f"{v['cold']['cpu_s']:.0f}", f"{v['cold']['peak_rss_mb']:.0f}",
                         f"{v['cold']['wall_s'] / r['cold']['wall_s']:.1f}x",
                         f"{v['warm']['wall_s'] / r['warm']['wall_s']:.1f}x"))  # fmt: skip
        out.append(table(("", "cold s", "warm s", "cold CPU s", "peak RSS MB",
                          "cold: ours faster", "warm: ours faster"), rows))  # fmt: skip
    profiled = [r for r in results if r.get("profile")]
    if profiled:
        out.append("\nstage split: the cold poll in-process with parse_workers 0 (parse, normalize and "
                   "sign run in this process's thread pool, not in worker processes); thread CPU "
                   "seconds around each stage function, and microseconds per stored item")  # fmt: skip
        out.append(_stage_table(profiled, "profile"))
    for r in results:
        if not r.get("cprofile"):
            continue
        p = r["cprofile"]
        out.append(f"\ncProfile of the same poll at N={r['feeds']} (timer: thread CPU time; "
                   f"cProfile's per-call overhead inflates call-heavy code such as feedparser): "
                   f"wall {p['wall_s']:.1f}s, CPU {p['cpu_s']:.1f}s")  # fmt: skip
        out.append(_stage_table([r], "cprofile"))
        out.append("largest own times: " + ", ".join(f"{k} {v:.2f}s" for k, v in p["top_functions_s"].items()))
    out.append("\ntargets")
    out.append(table(("target", "measured", "verdict"), targets(results)))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--reader-child"]:
        return reader_child(argv[1], argv[2], int(argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ints = lambda s: tuple(int(x) for x in s.split(",") if x)  # noqa: E731
    ap.add_argument("--sizes", type=ints, default=DEFAULT_SIZES)
    ap.add_argument("--quick", action="store_true", help="50 feeds only (CI smoke run)")
    ap.add_argument("--latency", help="ms, e.g. 50-300 or 0 (default 50-300, 50 above 1,000 feeds)")
    ap.add_argument("--reader-at", type=ints, default=(1000,), help="sizes with the reader peer")
    ap.add_argument("--reader-workers", type=ints, default=READER_WORKERS)
    ap.add_argument("--profile-at", type=ints, default=(100, 1000), help="sizes profiled in-process")
    ap.add_argument("--cprofile-at", type=ints, default=(1000,), help="sizes also run under cProfile")
    ap.add_argument("--floor-max", type=int, default=1000, help="feeds parsed for the floor")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vocab", action="store_true", help="fixed vocabulary, not the corpus")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--save", type=Path, help="also write the JSON results to this file")
    ap.add_argument("--keep", type=Path, help="work dir to keep (feeds, configs, DBs)")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.reader_at, args.profile_at, args.cprofile_at = (50,), (50,), (50,), (50,)
        args.reader_workers = (1, 4)
    results = []
    root = args.keep or Path(tempfile.mkdtemp(prefix="e2e_bench_"))
    try:
        for n in args.sizes:
            work = root / f"n{n}"
            for p in work.glob("*.db*"):
                p.unlink()
            work.mkdir(parents=True, exist_ok=True)
            results.append(bench_size(n, args, work))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.save:
        args.save.write_text(json.dumps({"results": results, "targets": targets(results)}, indent=2))
    if args.json:
        print(json.dumps({"results": results, "targets": targets(results)}, indent=2))
    else:
        print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
