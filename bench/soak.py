"""Soak test: the real daemon (`scheduler.py`) against local feeds that keep changing.

Serves N (default 50) generated feeds (RSS 2.0 and Atom 1.0, 20-50 entries each, ~20% of
the entries republished stories of other feeds; generator from bench/fetch_200.py) from
http.server in a SEPARATE PROCESS on 127.0.0.1, with strong ETags and Last-Modified, so an
unchanged feed answers 304. Two more feeds always fail: one URL is a 404, one serves an
HTML page. Every `--churn` seconds (default 20) a random ~20% of the feeds get 1-5 new
entries (about a third of them copies of other feeds' stories, with a new headline prefix
and boilerplate); their files are rewritten atomically, so the next poll gets a 200.

With `--updates` the feeds churn differently (issue #12: memory must not grow with content
updates): 30 feeds (unless --feeds), every entry of which changes its content before every
poll, and no new entries. Every `--churn` seconds (default 5, three times per 15 s poll
interval) each entry's last line, "Updated HH:MM:SS: N readers so far.", gets a new time
and count, as on a live blog or a page with a counter. The items stay the same, so the
daemon's memory should stay flat once the first polls are stored.

The daemon runs as a subprocess from the repo root:

    python scheduler.py --config <tmp>/feeds.yaml --db <tmp>/soak.db --log-format json

with `settings: {interval: 15s, check_every: 1s, http: 127.0.0.1:<free port>,
digest_path: <tmp>/digest.xml}`. Every 10 s the soak samples the RSS of the daemon and its
children (parse workers, from /proc), GETs /healthz (200 + JSON) and /digest.atom (200,
then the same request with If-None-Match: <ETag> must give 304). After `--duration` it
sends SIGTERM; the daemon must exit with 0 within 10 s. Then `PRAGMA integrity_check`,
counts from the database and the log, and a table (or `--json`): the RSS over time (one
row a minute) and its slope after `--warmup` (default 120 s), a least-squares fit in MB/min
of the samples after it; with `--updates` the target is under 1 MB/min.

"unexpected log lines": error/critical lines, plus warnings other than the per-feed
warnings of the two broken feeds, plus any line that is not JSON (a raw traceback).

Run (from the repo root):
    .venv/bin/python bench/soak.py               # 50 feeds, 10 minutes
    .venv/bin/python bench/soak.py --quick       # 60 seconds
    .venv/bin/python bench/soak.py --updates     # 30 feeds whose entries change every poll
    options: --feeds N  --duration S  --churn S  --warmup S  --seed S  --vocab  --json  --keep DIR
"""

from __future__ import annotations

import argparse
import html
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_200 import (  # noqa: E402 - bench scripts are not a package
    BOILERPLATE,
    REPO,
    TITLE_PREFIXES,
    Entry,
    Feed,
    TextSource,
    _serve,
    _status_kb,
    _to_html,
    _tree,
    generate,
    render,
)

DEFAULT_FEEDS, UPDATING_FEEDS = 50, 30
DEFAULT_DURATION, QUICK_DURATION = 600.0, 60.0
DEFAULT_CHURN, UPDATE_CHURN = 20.0, 5.0
DEFAULT_WARMUP = 120.0  # the first polls store every item and fill the caches
SLOPE_TARGET = 1.0  # MB/min after warm-up, with --updates (issue #12)
SAMPLE_EVERY = 10.0
MIN_ENTRIES, MAX_ENTRIES = 20, 50
CHURN_SHARE = 0.2
COPY_SHARE = 0.35  # of churned entries: copies of another feed's story
EXIT_LIMIT = 10.0  # the daemon promises to exit within 10 s of SIGTERM
HTTP_TIMEOUT = 5.0
BROKEN_404 = "missing.rss"  # never created: 404
BROKEN_HTML = "not-a-feed.html"
HTML_PAGE = b"""<!doctype html>
<html><head><title>Welcome</title></head>
<body><h1>Our news site</h1><p>The feed moved. This is a web page, not a feed.</p></body>
</html>
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------- feeds and churn


class Site:
    """The generated feeds on disk, and the churn that adds entries to them."""

    def __init__(self, root: Path, base: str, n_feeds: int, seed: int, use_corpus: bool):
        self.root = root
        self.base = base
        self.rng = random.Random(seed + 7)
        now = datetime.now(UTC).replace(microsecond=0)
        feeds, self.text_kind, _ = generate(n_feeds, MAX_ENTRIES, seed, use_corpus, now)
        for feed in feeds:  # newest first; keep 20-50 of them
            del feed.entries[self.rng.randint(MIN_ENTRIES, MAX_ENTRIES) :]
        self.feeds: list[Feed] = feeds
        self.text = TextSource(random.Random(seed + 1), use_corpus)
        self.serial = 0
        self.churns = 0
        self.churned_entries = 0
        self.copied_entries = 0
        self.updated_entries = 0
        self._first_html: dict[str, str] = {}  # guid -> the body before any update
        for feed in feeds:
            self.write(feed, now)
        write_atomically(root / BROKEN_HTML, HTML_PAGE)

    def name(self, feed: Feed) -> str:
        return f"{feed.slug}.{feed.kind}"

    def url(self, feed: Feed) -> str:
        return f"{self.base}/{self.name(feed)}"

    def write(self, feed: Feed, now: datetime) -> None:
        write_atomically(self.root / self.name(feed), render(feed, self.url(feed), now))

    def churn(self) -> int:
        """Give ~20% of the feeds 1-5 new entries; returns how many feeds changed."""
        now = datetime.now(UTC).replace(microsecond=0)
        k = max(1, round(len(self.feeds) * CHURN_SHARE))
        chosen = self.rng.sample(range(len(self.feeds)), k)
        for fi in chosen:
            feed = self.feeds[fi]
            for _ in range(self.rng.randint(1, 5)):
                self.serial += 1
                feed.entries.insert(0, self._entry(fi, feed, now))
            del feed.entries[MAX_ENTRIES:]  # old entries scroll off, as on a real feed
            self.write(feed, now)
        self.churns += 1
        return k

    def update(self) -> int:
        """Change every entry of every feed: its last line gets the time and a new count of
        readers (a different one per entry, so the line is no feed-wide template);
        returns how many feeds changed."""
        now = datetime.now(UTC).replace(microsecond=0)
        stamp = now.strftime("%H:%M:%S")
        for feed in self.feeds:
            for entry in feed.entries:
                first = self._first_html.setdefault(entry.guid, entry.html)
                readers = self.rng.randint(100, 999_999)
                entry.html = f"{first}\n<p>Updated {stamp}: {readers:,} readers so far.</p>"
            self.updated_entries += len(feed.entries)
            self.write(feed, now)
        self.churns += 1
        return len(self.feeds)

    def _entry(self, fi: int, feed: Feed, now: datetime) -> Entry:
        n = self.serial
        link = f"https://{feed.slug}.example.com/news/soak-{n}?utm_source=rss"
        others = [f for i, f in enumerate(self.feeds) if i != fi and f.entries]
        if others and self.rng.random() < COPY_SHARE:
            src = self.rng.choice(self.rng.choice(others).entries[:10])
            paras = src.html.split("\n")
            if len(paras) > 2 and self.rng.random() < 0.5:
                paras = paras[:-1]
            paras.append(f"<p>{html.escape(self.rng.choice(BOILERPLATE))}</p>")
            title = self.rng.choice(TITLE_PREFIXES) + src.title.split(" | ")[0]
            body = "\n".join(paras)
            self.copied_entries += 1
        else:
            title = self.text.title()
            body = _to_html(self.rng, self.text.paragraphs(self.rng.randint(150, 600)), link)
        self.churned_entries += 1
        return Entry(guid=f"urn:soak:{feed.slug}:{n}", link=link, title=title, html=body,
                     published=now)  # fmt: skip


# ---------------------------------------------------------------- probes


def sample_rss(root: int) -> tuple[int, int, int]:
    """(tree RSS kB, main RSS kB, processes) of `root` and its descendants."""
    total = main = procs = 0
    for pid in _tree(root):
        rss = _status_kb(pid, ("VmRSS",)).get("VmRSS")
        if rss is None:
            continue
        procs += 1
        total += rss
        if pid == root:
            main = rss
    return total, main, procs


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def check_http(base: str) -> list[str]:
    """Problems with /healthz and /digest.atom (empty: all fine)."""
    problems = []
    try:
        status, _, body = http_get(f"{base}/healthz")
        if status != 200:
            problems.append(f"/healthz answered {status}")
        else:
            health = json.loads(body)
            # "degraded": some feed fails (the soak serves two broken feeds on purpose)
            if health.get("status") not in ("ok", "degraded"):
                problems.append(f"/healthz status {health.get('status')!r}")
    except (OSError, ValueError) as exc:
        problems.append(f"/healthz: {type(exc).__name__}: {exc}")
    try:
        for _attempt in range(2):  # a publish between the two requests changes the ETag
            status, headers, _ = http_get(f"{base}/digest.atom")
            etag = headers.get("ETag")
            if status != 200 or not etag:
                problems.append(f"/digest.atom answered {status} (ETag {etag!r})")
                break
            status2, headers2, body2 = http_get(f"{base}/digest.atom", {"If-None-Match": etag})
            if status2 == 304:
                break
            if status2 == 200 and headers2.get("ETag") != etag:
                continue  # republished in between: try again
            problems.append(f"/digest.atom with If-None-Match answered {status2}, not 304")
            break
        else:
            problems.append("/digest.atom changed between every GET and its conditional GET")
    except OSError as exc:
        problems.append(f"/digest.atom: {type(exc).__name__}: {exc}")
    return problems


def read_log(path: Path) -> list[dict]:
    """The daemon's stderr as JSON records; a line that is not JSON becomes level 'raw'."""
    out = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError
            except ValueError:
                rec = {"level": "raw", "message": line}
            out.append(rec)
    return out


_UPDATED = re.compile(r"\bupdated_items=(\d+)")


def count_polls(path: Path) -> tuple[int, int]:
    """(polls logged, items they updated)."""
    polls = [str(r.get("message", "")) for r in read_log(path)]
    polls = [m for m in polls if m.startswith("poll:")]
    return len(polls), sum(int(m.group(1)) for p in polls if (m := _UPDATED.search(p)))


def slope_mb_per_min(samples: list[dict], key: str, after_s: float) -> float | None:
    """Least-squares slope of samples[key] (kB) over the samples from `after_s` on, in
    MB/min; None with fewer than three samples there."""
    points = [(s["t"], s[key]) for s in samples if s["t"] >= after_s]
    if len(points) < 3:
        return None
    mean_t = sum(t for t, _ in points) / len(points)
    mean_kb = sum(kb for _, kb in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (kb - mean_kb) for t, kb in points)
    return cov / var / 1024 * 60 if var else None


def per_minute(samples: list[dict]) -> list[dict]:
    """The first sample of each minute, and the last one."""
    rows, minute = [], -1
    for s in samples:
        if int(s["t"] // 60) > minute:
            minute = int(s["t"] // 60)
            rows.append(s)
    if samples and rows[-1] is not samples[-1]:
        rows.append(samples[-1])
    return rows


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--feeds", type=int, help="working feeds (50; 30 with --updates)")
    ap.add_argument("--duration", type=float, default=DEFAULT_DURATION, help="seconds (600)")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION:.0f} s")
    ap.add_argument("--churn", type=float, help="seconds between churns (20; 5 with --updates)")
    ap.add_argument(
        "--updates",
        action="store_true",
        help="every entry changes its content before every poll; no new entries",
    )
    ap.add_argument("--warmup", type=float, default=DEFAULT_WARMUP,
                    help="seconds left out of the RSS slope (120; at most half the run)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=50)
    ap.add_argument("--vocab", action="store_true", help="fixed vocabulary, not the corpus")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--keep", type=Path, help="write feeds, config, DB and log here and keep them")
    args = ap.parse_args(argv)
    duration = QUICK_DURATION if args.quick else args.duration
    n_feeds = args.feeds or (UPDATING_FEEDS if args.updates else DEFAULT_FEEDS)
    churn_every = args.churn or (UPDATE_CHURN if args.updates else DEFAULT_CHURN)
    warmup = min(args.warmup, duration / 2)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (
        lambda *a: print(*a, flush=True))  # fmt: skip

    work = args.keep or Path(tempfile.mkdtemp(prefix="soak_"))
    if args.keep and work.exists():
        for p in ("site", "soak.db", "soak.db-wal", "soak.db-shm", "soak.db.lock", "daemon.log"):
            target = work / p
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    site_dir = work / "site"
    site_dir.mkdir(parents=True)
    db, cfg, log_path = work / "soak.db", work / "feeds.yaml", work / "daemon.log"

    ctx = multiprocessing.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    server = ctx.Process(target=_serve, args=(str(site_dir), child_conn), daemon=True)
    server.start()
    proc: subprocess.Popen | None = None
    try:
        if not parent_conn.poll(30):
            raise SystemExit("feed server did not start")
        feed_base = f"http://127.0.0.1:{parent_conn.recv()}"
        t0 = time.perf_counter()
        site = Site(site_dir, feed_base, n_feeds, args.seed, not args.vocab)
        broken = [f"{feed_base}/{BROKEN_404}", f"{feed_base}/{BROKEN_HTML}"]
        port = free_port()
        daemon_base = f"http://127.0.0.1:{port}"
        lines = [
            "settings:",
            "  interval: 15s",
            "  check_every: 1s",
            f'  http: "127.0.0.1:{port}"',
            f"  digest_path: {json.dumps(str(work / 'digest.xml'))}",
            "feeds:",
        ]
        for feed in site.feeds:
            lines += [f"  - url: {site.url(feed)}", f"    name: {feed.title}"]
        lines += [f"  - url: {broken[0]}", "    name: Broken 404",
                  f"  - url: {broken[1]}", "    name: Broken HTML"]  # fmt: skip
        cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
        n_entries = sum(len(f.entries) for f in site.feeds)
        say(f"text: {site.text_kind}")
        say(f"{n_feeds} feeds + 2 broken{' (every entry updated before each poll)' if args.updates else ''}, {n_entries} entries, generated in "
            f"{time.perf_counter() - t0:.1f}s; feeds at {feed_base} (pid {server.pid}); "
            f"daemon at {daemon_base}; work dir {work}; running {duration:.0f}s")  # fmt: skip

        cmd = [sys.executable, "scheduler.py", "--config", str(cfg), "--db", str(db),
               "--log-format", "json"]  # fmt: skip
        log_file = log_path.open("wb")
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
        samples: list[dict] = []
        http_checks = 0
        http_problems: list[str] = []
        start_rss: dict | None = None
        next_sample = started + SAMPLE_EVERY
        next_churn = started + churn_every
        end = started + duration
        early_exit = None
        samples_final = False  # one last sample just before SIGTERM
        while True:
            now = time.monotonic()
            if proc.poll() is not None:
                early_exit = proc.returncode
                break
            if now >= end and samples_final:
                break
            if now >= next_churn:
                site.update() if args.updates else site.churn()
                next_churn += churn_every
            final = now >= end - 1.0 and not samples_final
            if now >= next_sample or final:
                next_sample += SAMPLE_EVERY
                samples_final = samples_final or final
                tree, main_kb, procs = sample_rss(proc.pid)
                polls, updated = count_polls(log_path)
                problems = check_http(daemon_base)
                http_checks += 1
                http_problems += [f"t={now - started:.0f}s {p}" for p in problems]
                s = {"t": round(now - started, 1), "rss_tree_kb": tree, "rss_main_kb": main_kb,
                     "processes": procs, "polls": polls, "updated_items": updated,
                     "http_ok": not problems}  # fmt: skip
                samples.append(s)
                if start_rss is None and polls > 0:
                    start_rss = s
                if not args.json:
                    say(f"  t={s['t']:5.0f}s  RSS {tree / 1024:6.1f} MB ({procs} procs, main "
                        f"{main_kb / 1024:.1f})  polls {polls:4d}  updated {updated:6d}  churns {site.churns:3d}  "
                        f"http {'ok' if not problems else '; '.join(problems)}")  # fmt: skip
            wake = min(next_sample, next_churn, end - 1.0 if not samples_final else end)
            time.sleep(max(0.05, wake - time.monotonic()))

        # ------------------------------------------------ stop
        exit_s = None
        if early_exit is None:
            t_term = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=EXIT_LIMIT + 20)
                exit_s = time.monotonic() - t_term
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        exit_code = proc.returncode
        log_file.close()
        ran_s = time.monotonic() - started
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        server.terminate()
        server.join(5)

    # ------------------------------------------------ results
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        integrity = "; ".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
        outcomes = dict(conn.execute("SELECT outcome, count(*) FROM fetch_log GROUP BY outcome"))
        errors_by_feed = dict(conn.execute(
            "SELECT f.url, count(*) FROM fetch_log l JOIN feeds f ON f.id = l.feed_id "
            "WHERE l.outcome = 'error' GROUP BY f.url"
        ))  # fmt: skip
        error_texts = [r[0] for r in conn.execute(
            "SELECT DISTINCT f.url || ': ' || l.error FROM fetch_log l JOIN feeds f "
            "ON f.id = l.feed_id WHERE l.outcome = 'error'"
        )]  # fmt: skip
        items = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        clusters = conn.execute("SELECT count(*) FROM clusters").fetchone()[0]
        multi = conn.execute(
            "SELECT count(*) FROM (SELECT cluster_id FROM items WHERE cluster_id IS NOT NULL "
            "GROUP BY cluster_id HAVING count(DISTINCT feed_id) > 1)"
        ).fetchone()[0]
        unclustered = conn.execute(
            "SELECT count(*) FROM items WHERE cluster_id IS NULL"
        ).fetchone()[0]
        feed_status = dict(conn.execute("SELECT status, count(*) FROM feeds GROUP BY status"))
    conn.close()

    records = read_log(log_path)
    levels = Counter(r.get("level", "?") for r in records)
    polls = [r for r in records if str(r.get("message", "")).startswith("poll:")]

    def expected(r: dict) -> bool:
        msg = str(r.get("message", ""))
        return (
            r.get("level") == "warning"
            and msg.startswith("feed ")
            and any(f"({u}):" in msg for u in broken)
        )

    unexpected = [r for r in records
                  if r.get("level") in ("error", "critical", "raw")
                  or (r.get("level") == "warning" and not expected(r))]  # fmt: skip
    unexpected_err = [r for r in unexpected if r.get("level") in ("error", "critical", "raw")]
    errors_other = {u: n for u, n in errors_by_feed.items() if u not in broken}
    rss = [s["rss_tree_kb"] for s in samples]
    mb = lambda kb: round(kb / 1024, 1)  # noqa: E731
    slope_tree = slope_mb_per_min(samples, "rss_tree_kb", warmup)
    slope_main = slope_mb_per_min(samples, "rss_main_kb", warmup)
    result = {
        "duration_s": round(ran_s, 1),
        "feeds": n_feeds,
        "updates_mode": args.updates,
        "broken_feeds": 2,
        "initial_entries": n_entries,
        "churns": site.churns,
        "churned_entries": site.churned_entries,
        "updated_entries_served": site.updated_entries,
        "updated_items": samples[-1]["updated_items"] if samples else 0,
        "copied_entries": site.copied_entries,
        "polls_logged": len(polls),
        "fetches": sum(outcomes.values()),
        "fetches_by_outcome": outcomes,
        "items": items,
        "clusters": clusters,
        "multi_source_clusters": multi,
        "unclustered_items": unclustered,
        "feed_errors": outcomes.get("error", 0),
        "feed_errors_by_url": errors_by_feed,
        "feed_errors_not_broken_feeds": errors_other,
        "feed_error_messages": error_texts,
        "feeds_by_status": feed_status,
        "log_levels": dict(levels),
        "unexpected_error_lines": len(unexpected_err),
        "unexpected_warning_lines": len(unexpected) - len(unexpected_err),
        "unexpected_lines": [
            r.get("message") if r.get("level") == "raw" else r for r in unexpected
        ][:50],
        "http_checks": http_checks,
        "http_problems": http_problems,
        "rss_start_mb": mb(start_rss["rss_tree_kb"]) if start_rss else None,
        "rss_max_mb": mb(max(rss)) if rss else None,
        "rss_end_mb": mb(rss[-1]) if rss else None,
        "rss_main_max_mb": mb(max(s["rss_main_kb"] for s in samples)) if samples else None,
        "warmup_s": warmup,
        "rss_slope_mb_per_min": round(slope_tree, 2) if slope_tree is not None else None,
        "rss_main_slope_mb_per_min": round(slope_main, 2) if slope_main is not None else None,
        "exit_code": exit_code,
        "exited_early": early_exit is not None,
        "exit_s": round(exit_s, 2) if exit_s is not None else None,
        "exit_ok": early_exit is None
        and exit_code == 0
        and exit_s is not None
        and exit_s <= EXIT_LIMIT,
        "integrity": integrity,
        "samples": samples,
        "work_dir": str(work) if args.keep else None,
    }
    ok = (result["exit_ok"] and integrity == "ok" and not unexpected_err and not http_problems
          and not errors_other)  # fmt: skip
    result["pass"] = bool(ok)
    if not args.keep:
        if not ok:  # keep the evidence
            result["work_dir"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if ok else 1

    by_outcome = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
    churned = (
        f"{site.churns} updates of every entry, {site.updated_entries} entries changed"
        if args.updates
        else f"{site.churns} churns, {site.churned_entries} new entries, {site.copied_entries} of them copies"
    )
    slope = "n/a (too few samples after the warm-up)"
    if slope_tree is not None and slope_main is not None:
        slope = f"{slope_tree:+.2f} MB/min (main {slope_main:+.2f}) from t={warmup:.0f} s"
        if args.updates:
            slope += f"; target < {SLOPE_TARGET:g}: " + (
                "ok" if slope_tree < SLOPE_TARGET else "OVER"
            )
    rows = [
        ("duration", f"{ran_s:.0f} s ({churned})"),
        ("feeds", f"{n_feeds} + 2 broken (404, HTML)"),
        ("polls logged", f"{len(polls)} ({result['updated_items']} items updated)"),
        ("fetches", f"{sum(outcomes.values())} ({by_outcome})"),
        ("items", f"{items} (entries served: {n_entries} initial + {site.churned_entries} "
                  "churned; the last churn may not be polled yet)" if not args.updates else
                  f"{items} (entries served: {n_entries}, each changed {site.churns} times)"),
        ("clusters", f"{clusters} ({multi} multi-source)"),
        ("feed errors", f"{outcomes.get('error', 0)} (from other feeds: {sum(errors_other.values())})"),
        ("unexpected log lines", f"{len(unexpected_err)} error/critical/raw, "
                                 f"{len(unexpected) - len(unexpected_err)} other warnings"),
        ("http checks", f"{http_checks - len({p.split()[0] for p in http_problems})}/{http_checks} ok"),
        ("RSS MB start/max/end", f"{result['rss_start_mb']} / {result['rss_max_mb']} / "
                                 f"{result['rss_end_mb']} (daemon + children)"),
        ("RSS slope", slope),
        ("exit", f"code {exit_code} after "
                 + (f"{exit_s:.2f} s" if exit_s is not None else "(exited early or killed)")
                 + ("  ok" if result["exit_ok"] else "  FAILED")),
        ("integrity", integrity),
    ]  # fmt: skip
    print("\n  t min  RSS MB (tree)  RSS MB (main)  polls  items updated")
    for s in per_minute(samples):
        print(
            f"  {s['t'] / 60:5.1f}  {s['rss_tree_kb'] / 1024:13.1f}  {s['rss_main_kb'] / 1024:13.1f}  "
            f"{s['polls']:5d}  {s['updated_items']:13d}"
        )
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    for msg in error_texts:
        print(f"  error: {msg}")
    for p in http_problems:
        print(f"  http: {p}")
    for r in unexpected[:20]:
        print(f"  log: {r.get('level')}: {r.get('message')}")
    if result["work_dir"]:
        print(f"work dir kept: {result['work_dir']}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
