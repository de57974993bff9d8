"""Fetch throughput benchmark: wall time and peak memory of one real `aggregator fetch`.

Generates N (default 200) deterministic feeds of 50 entries each (seeded; a mix of RSS 2.0
and Atom 1.0, roughly 60/40), with HTML descriptions of 150-600 words. About 20% of the
entries are republished stories: a story first carried by another feed, copied with small
variations (new headline prefix/suffix, outlet boilerplate appended, last paragraph
dropped, its own link and guid), so the dedup stage has real clusters to build.

Text source: sentences from ../shared/corpus/gva_dev.jsonl when that file exists (each
story is a random mix of corpus sentences, so distinct stories are not near-duplicates of
each other), otherwise words drawn from a fixed built-in vocabulary (`--vocab` forces it).
Dates are relative to the current hour (items must fall inside the dedup window), so the
content is deterministic but pubDates move with the clock.

The feeds are written to a temp dir and served by http.server in a SEPARATE PROCESS on
127.0.0.1 (strong ETag per file, 304 on If-None-Match). Then, as subprocesses:

    python -m aggregator --config feeds.yaml --db bench.db fetch     # cold: empty DB
    python -m aggregator --config feeds.yaml --db bench.db fetch     # warm: all 304

Measured for the cold run: wall time (spawn to exit), and memory by polling /proc every
50 ms over the CLI process and all its descendants (forkserver, parse workers): the max of
the summed RSS of the tree, the max RSS of the main process (also its kernel VmHWM), and the
max summed PSS (RSS counts shared pages once per process; PSS splits them). Also shown, as
a cross-check, getrusage(RUSAGE_CHILDREN).ru_maxrss after the run: the kernel's peak of the
largest single waited-for descendant. Items and clusters are counted in the SQLite DB.

All feeds live on one host (127.0.0.1), so settings.per_host (default 2) caps concurrent
requests; `--per-host K` writes `settings: per_host: K` into feeds.yaml to lift it.

Run (from the repo root):
    .venv/bin/python bench/fetch_200.py              # 200 feeds x 50 entries
    .venv/bin/python bench/fetch_200.py --quick      # 20 feeds
    options: --feeds N  --entries M  --seed S  --vocab  --per-host K  --json  --keep DIR
"""

from __future__ import annotations

import argparse
import html
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "gva_dev.jsonl"

DEFAULT_FEEDS, QUICK_FEEDS = 200, 20
ENTRIES = 50
MIN_WORDS, MAX_WORDS = 150, 600
REPUBLISH_SHARE = 0.2
ATOM_SHARE = 0.4
SPREAD_HOURS = 72
POLL_SECONDS = 0.05
CLI_TIMEOUT = 1800.0
_VOCABULARY_TEXT = """
the a of to and in for on with as at by from that this it its was were is are be been has
have had will would could should may might said says told according officials police city
county state federal court judge jury trial charge charges charged arrest arrested suspect
victim victims witness witnesses report reported reports investigation investigators
department sheriff deputy officer officers spokesman spokeswoman mayor council governor
senator bill law vote votes voters election campaign budget tax taxes school schools
students teacher teachers district board parents university college hospital health
patients doctors nurses medical care insurance company companies business market markets
shares stock investors economy jobs workers union wages prices inflation bank banks rate
rates loan loans housing home homes building construction road roads traffic bridge transit
bus train airport flight flights weather storm rain snow flood fire firefighters crews
residents neighborhood community street avenue downtown park river lake coast beach water
power energy oil gas electric plant climate scientists study research data percent million
billion year years month months week weeks day days night morning afternoon evening
monday tuesday wednesday thursday friday saturday sunday january february march april june
july august september october november december first second third last next new old
early late local national international public private small large major minor several
many few more most less least other another each every some any all both either neither
after before during while since until because although however meanwhile instead also
still already again often never always sometimes later earlier recently nearly about
around between among against without within across through under over into onto near
game team teams season coach players fans league win won loss lost score points record
music film show festival museum art artist library church restaurant food farm farmers
technology software internet phone app users security privacy network service services
government agency program programs plan plans policy proposal decision meeting hearing
statement interview press release announcement update family families children child man
woman men women people person group groups leaders member members president director chief
"""
VOCABULARY = _VOCABULARY_TEXT.split()

TITLE_PREFIXES = ("UPDATE: ", "Breaking: ", "", "", "Watch: ", "")
BOILERPLATE = (
    "Follow us on social media for the latest updates.",
    "Sign up for our daily newsletter to get the top stories in your inbox.",
    "Copyright 2024. All rights reserved. This material may not be redistributed.",
    "Have a news tip? Contact our newsroom any time, day or night.",
    "The Associated Press contributed to this report.",
)


# ---------------------------------------------------------------- text


class TextSource:
    """Draws sentences from the corpus (shuffled across articles) or from the vocabulary."""

    def __init__(self, rng: random.Random, use_corpus: bool):
        self.rng = rng
        self.sentences: list[str] = []
        if use_corpus and CORPUS.exists():
            seen: set[str] = set()
            with CORPUS.open(encoding="utf-8") as f:
                for line in f:
                    for para in json.loads(line)["text"].split("\n"):
                        for s in re.split(r"(?<=[.!?])\s+", para.strip()):
                            s = " ".join(s.split())
                            if 6 <= len(s.split()) <= 45 and s not in seen:
                                seen.add(s)
                                self.sentences.append(s)
            self.sentences.sort()  # set/file order independent; the rng does the mixing
        self.kind = (
            f"corpus sentences ({CORPUS}, {len(self.sentences):,} unique)"
            if self.sentences
            else f"fixed vocabulary ({len(VOCABULARY)} words)"
        )

    def sentence(self) -> str:
        if self.sentences:
            return self.rng.choice(self.sentences)
        words = self.rng.choices(VOCABULARY, k=self.rng.randint(8, 24))
        return " ".join(words).capitalize() + "."

    def title(self) -> str:
        words = self.sentence().rstrip(".!?").split()[: self.rng.randint(6, 12)]
        return " ".join(words)

    def paragraphs(self, target_words: int) -> list[str]:
        paras: list[str] = []
        words = 0
        while words < target_words:
            para: list[str] = []
            for _ in range(self.rng.randint(2, 5)):
                s = self.sentence()
                para.append(s)
                words += len(s.split())
                if words >= target_words:
                    break
            paras.append(" ".join(para))
        return paras


@dataclass
class Story:
    sid: int
    title: str
    paragraphs: list[str]


@dataclass
class Entry:
    guid: str
    link: str
    title: str
    html: str
    published: datetime


@dataclass
class Feed:
    slug: str
    kind: str  # "rss" | "atom"
    title: str
    entries: list[Entry] = field(default_factory=list)


def _to_html(rng: random.Random, paragraphs: list[str], link: str) -> str:
    out = []
    for i, p in enumerate(paragraphs):
        text = html.escape(p, quote=False)
        if i == 0:
            text = f"<strong>{text}</strong>" if rng.random() < 0.3 else text
        elif rng.random() < 0.25:
            words = text.split(" ")
            k = rng.randrange(len(words))
            words[k] = f'<a href="{link}#p{i}">{words[k]}</a>'
            text = " ".join(words)
        elif rng.random() < 0.15:
            text = f"<em>{text}</em>"
        out.append(f"<p>{text}</p>")
    return "\n".join(out)


def generate(n_feeds: int, n_entries: int, seed: int, use_corpus: bool, now: datetime):
    """N feeds of n_entries each; returns (feeds, text source description, republished)."""
    rng = random.Random(seed)
    text = TextSource(random.Random(seed + 1), use_corpus)
    feeds = [
        Feed(f"feed{i:04d}", "atom" if rng.random() < ATOM_SHARE else "rss",
             f"Bench Outlet {i:04d}")
        for i in range(n_feeds)
    ]  # fmt: skip
    originals: list[tuple[int, Story]] = []  # (feed index, story) of stories already placed
    republished = 0
    sid = 0
    for pos in range(n_entries):  # round-robin, so republished stories come from earlier posts
        for fi, feed in enumerate(feeds):
            base = now - timedelta(seconds=rng.uniform(0, SPREAD_HOURS * 3600))
            others = [o for o in originals[-5000:] if o[0] != fi] if originals else []
            if others and rng.random() < REPUBLISH_SHARE:
                _, story = rng.choice(others)
                paras = list(story.paragraphs)
                if len(paras) > 2 and rng.random() < 0.5:
                    paras = paras[:-1]  # trimmed
                if rng.random() < 0.6:
                    paras.append(rng.choice(BOILERPLATE))
                title = rng.choice(TITLE_PREFIXES) + story.title
                if rng.random() < 0.3:
                    title += f" | {feed.title}"
                republished += 1
            else:
                target = rng.randint(MIN_WORDS, MAX_WORDS)
                story = Story(sid, text.title(), text.paragraphs(target))
                sid += 1
                originals.append((fi, story))
                paras, title = story.paragraphs, story.title
            link = f"https://{feed.slug}.example.com/news/{pos}-{story.sid}?utm_source=rss"
            feed.entries.append(Entry(
                guid=f"urn:bench:{feed.slug}:{pos}", link=link, title=title,
                html=_to_html(rng, paras, link), published=base,
            ))  # fmt: skip
    for feed in feeds:
        feed.entries.sort(key=lambda e: e.published, reverse=True)
    return feeds, text.kind, republished


def render(feed: Feed, self_url: str, now: datetime) -> bytes:
    if feed.kind == "rss":
        items = "".join(
            f"<item><title>{escape(e.title)}</title><link>{escape(e.link)}</link>"
            f'<guid isPermaLink="false">{e.guid}</guid>'
            f"<pubDate>{format_datetime(e.published, usegmt=True)}</pubDate>"
            f"<description>{escape(e.html)}</description></item>\n"
            for e in feed.entries
        )
        doc = (
            '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
            f"<title>{escape(feed.title)}</title><link>https://{feed.slug}.example.com/</link>"
            f"<description>Benchmark feed</description>"
            f"<lastBuildDate>{format_datetime(now, usegmt=True)}</lastBuildDate>\n"
            f"{items}</channel></rss>\n"
        )
    else:
        entries = "".join(
            f"<entry><title>{escape(e.title)}</title>"
            f'<link rel="alternate" href="{escape(e.link)}"/><id>{e.guid}</id>'
            f"<updated>{e.published.isoformat()}</updated>"
            f"<published>{e.published.isoformat()}</published>"
            f'<content type="html">{escape(e.html)}</content></entry>\n'
            for e in feed.entries
        )
        doc = (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<feed xmlns="http://www.w3.org/2005/Atom">'
            f"<title>{escape(feed.title)}</title><id>urn:bench:{feed.slug}</id>"
            f'<link rel="self" href="{escape(self_url)}"/>'
            f"<updated>{now.isoformat()}</updated>\n{entries}</feed>\n"
        )
    return doc.encode("utf-8")


# ---------------------------------------------------------------- server (separate process)


def _serve(directory: str, conn) -> None:
    """Child process: static files from `directory` with strong ETags and 304s."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        extensions_map = {
            **SimpleHTTPRequestHandler.extensions_map,
            ".rss": "application/rss+xml",
            ".atom": "application/atom+xml",
        }
        _etag: str | None = None

        def send_head(self):
            path = self.translate_path(self.path)
            if os.path.isfile(path):
                st = os.stat(path)
                etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
                inm = self.headers.get("If-None-Match")
                if inm and (inm.strip() == "*" or etag in (t.strip() for t in inm.split(","))):
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return None
                self._etag = etag
            return super().send_head()

        def end_headers(self) -> None:
            if self._etag:
                self.send_header("ETag", self._etag)
                self._etag = None
            super().end_headers()

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=directory))
    httpd.daemon_threads = True
    conn.send(httpd.server_address[1])
    conn.close()
    httpd.serve_forever()


# ---------------------------------------------------------------- measurement


def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    return children


def _tree(root: int) -> list[int]:
    children = _ppid_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _status_kb(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    found = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    found[k] = int(v.split()[0])
    except (OSError, ValueError):
        pass
    return found


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class TreeSampler(threading.Thread):
    """Polls the process tree under `root` every POLL_SECONDS until stopped."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.max_sum_kb = self.max_main_kb = self.max_single_kb = self.max_pss_kb = 0
        self.main_hwm_kb = 0
        self.max_procs = 0
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(POLL_SECONDS)

    def sample(self) -> None:
        pids = _tree(self.root)
        total = pss = 0
        live = 0
        for pid in pids:
            st = _status_kb(pid, ("VmRSS", "VmHWM"))
            if "VmRSS" not in st:
                continue
            live += 1
            rss = st["VmRSS"]
            total += rss
            pss += _pss_kb(pid)
            self.max_single_kb = max(self.max_single_kb, rss)
            if pid == self.root:
                self.max_main_kb = max(self.max_main_kb, rss)
                self.main_hwm_kb = max(self.main_hwm_kb, st.get("VmHWM", 0))
        self.max_sum_kb = max(self.max_sum_kb, total)
        self.max_pss_kb = max(self.max_pss_kb, pss)
        self.max_procs = max(self.max_procs, live)
        self.samples += 1


@dataclass
class Run:
    wall: float
    returncode: int
    stderr: str
    sampler: TreeSampler
    ru_maxrss_kb: int


def run_fetch(cfg: Path, db: Path) -> Run:
    cmd = [sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), "fetch"]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            rc = proc.wait(timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        wall = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    ru = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return Run(wall, rc, stderr, sampler, ru)


_SUMMARY = re.compile(
    r"(\d+) feeds in [\d.]+s: (\d+) new items, (\d+) updated, (\d+) new clusters, "
    r"(\d+) not modified, (\d+) errors"
)


def summary(stderr: str) -> dict[str, int]:
    m = _SUMMARY.search(stderr)
    if not m:
        return {}
    keys = ("feeds", "new_items", "updated", "new_clusters", "not_modified", "errors")
    return dict(zip(keys, map(int, m.groups()), strict=True))


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--feeds", type=int, default=DEFAULT_FEEDS, help="number of feeds (200)")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_FEEDS} feeds")
    ap.add_argument("--entries", type=int, default=ENTRIES, help="entries per feed (50)")
    ap.add_argument("--seed", type=int, default=200)
    ap.add_argument("--vocab", action="store_true", help="fixed vocabulary, not the corpus")
    ap.add_argument("--per-host", type=int, help="write settings.per_host into feeds.yaml")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--keep", type=Path, help="write feeds, config and DB here and keep them")
    args = ap.parse_args(argv)
    n_feeds = QUICK_FEEDS if args.quick else args.feeds
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    t0 = time.perf_counter()
    feeds, text_kind, republished = generate(n_feeds, args.entries, args.seed, not args.vocab, now)
    gen_s = time.perf_counter() - t0

    work = args.keep or Path(tempfile.mkdtemp(prefix="fetch_bench_"))
    site = work / "site"
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    db = work / "bench.db"
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        p.unlink(missing_ok=True)

    ctx = multiprocessing.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    server = ctx.Process(target=_serve, args=(str(site), child_conn), daemon=True)
    server.start()
    try:
        if not parent_conn.poll(30):
            raise SystemExit("feed server did not start")
        port = parent_conn.recv()
        base = f"http://127.0.0.1:{port}"
        total_bytes = 0
        lines = []
        if args.per_host:
            lines += ["settings:", f"  per_host: {args.per_host}"]
        lines.append("feeds:")
        for feed in feeds:
            name = f"{feed.slug}.{feed.kind}"
            url = f"{base}/{name}"
            body = render(feed, url, now)
            total_bytes += len(body)
            (site / name).write_bytes(body)
            lines += [f"  - url: {url}", f"    name: {feed.title}"]
        cfg = work / "feeds.yaml"
        cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
        n_entries = sum(len(f.entries) for f in feeds)
        log(f"text: {text_kind}")
        log(f"generated {n_feeds} feeds ({sum(f.kind == 'rss' for f in feeds)} RSS, "
            f"{sum(f.kind == 'atom' for f in feeds)} Atom), {n_entries} entries "
            f"({republished} republished, {republished / n_entries:.0%}), "
            f"{total_bytes / 1e6:.1f} MB of XML in {gen_s:.1f}s; serving {base} from pid "
            f"{server.pid}; work dir {work}")  # fmt: skip

        cold = run_fetch(cfg, db)
        if cold.returncode != 0:
            sys.stderr.write(cold.stderr[-4000:])
            raise SystemExit(f"cold fetch failed with exit code {cold.returncode}")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            items = conn.execute("select count(*) from items").fetchone()[0]
            clusters = conn.execute("select count(*) from clusters").fetchone()[0]
            multi = conn.execute(
                "select count(*) from (select cluster_id from items where cluster_id is not null"
                " group by cluster_id having count(*) > 1)"
            ).fetchone()[0]
        conn.close()
        warm = run_fetch(cfg, db)
        if warm.returncode != 0:
            sys.stderr.write(warm.stderr[-4000:])
            raise SystemExit(f"warm fetch failed with exit code {warm.returncode}")
    finally:
        server.terminate()
        server.join(5)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    cs, ws = summary(cold.stderr), summary(warm.stderr)
    s = cold.sampler
    result = {
        "feeds": n_feeds,
        "entries": n_entries,
        "republished_entries": republished,
        "xml_bytes": total_bytes,
        "text_source": text_kind,
        "items_stored": items,
        "clusters": clusters,
        "clusters_with_2plus_items": multi,
        "cold_wall_s": round(cold.wall, 2),
        "items_per_s": round(items / cold.wall, 1),
        "peak_rss_tree_sum_mb": mb(s.max_sum_kb),
        "peak_rss_main_mb": mb(max(s.max_main_kb, s.main_hwm_kb)),
        "peak_rss_main_sampled_mb": mb(s.max_main_kb),
        "peak_rss_single_process_mb": mb(s.max_single_kb),
        "peak_pss_tree_sum_mb": mb(s.max_pss_kb),
        "max_processes": s.max_procs,
        "samples": s.samples,
        "ru_maxrss_children_mb": mb(cold.ru_maxrss_kb),
        "cold_summary": cs,
        "warm_wall_s": round(warm.wall, 2),
        "warm_peak_rss_tree_sum_mb": mb(warm.sampler.max_sum_kb),
        "warm_summary": ws,
        "warm_all_304": bool(ws) and ws.get("not_modified") == n_feeds,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    headers = ("feeds", "entries", "items stored", "clusters", "cold wall s", "items/s",
               "peak RSS MB (tree)", "peak RSS MB (main)", "warm wall s")  # fmt: skip
    row = (n_feeds, n_entries, items, clusters, f"{cold.wall:.2f}", f"{items / cold.wall:.0f}",
           f"{mb(s.max_sum_kb):.1f}", f"{result['peak_rss_main_mb']:.1f}", f"{warm.wall:.2f}")  # fmt: skip
    widths = [max(len(h), len(str(v))) for h, v in zip(headers, row, strict=True)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join(str(v).rjust(w) for v, w in zip(row, widths, strict=True)))
    print(f"clusters with 2+ items: {multi}; peak PSS (tree) {mb(s.max_pss_kb):.1f} MB; "
          f"largest single process {mb(s.max_single_kb):.1f} MB; up to {s.max_procs} processes "
          f"({s.samples} samples at {POLL_SECONDS * 1000:.0f} ms); "
          f"ru_maxrss(children) {mb(cold.ru_maxrss_kb):.1f} MB")  # fmt: skip
    print(f"cold: {cs or 'summary line not found'}")
    print(f"warm: {ws or 'summary line not found'}"
          + ("  (all 304)" if result["warm_all_304"] else "  (NOT all 304)"))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
