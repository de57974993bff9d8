"""Synthetic feed workload for the end-to-end benchmarks: N deterministic feeds served over
HTTP from a SEPARATE PROCESS, spread over many loopback hosts.

Feeds: RSS 2.0 or Atom 1.0 (about 60/40), 50 entries each, HTML bodies of 150-600 words
(sentences of ../shared/corpus/gva_dev.jsonl when present, else a fixed vocabulary; the
renderer and vocabulary are fetch_200.py's). About 20% of the entries republish a story
first carried by another feed, with the variations syndication brings: a new headline or a
prefix/suffix on the old one, a summary cut to 40-90 words ending in "Continue reading" or
"[…]", the last paragraph dropped, a byline added, outlet boilerplate or "The post …
appeared first on …" appended, the publisher's own link with tracking parameters (5% keep
the original's link).

Determinism: every entry is a pure function of (seed, feed, slot), seeded with string seeds
(sha512-based, independent of PYTHONHASHSEED), and dates are relative to a fixed --anchor
(2026-01-01T00:00:00Z), so the same seed gives the same bytes on every run and machine
(`--sha` prints one digest of them all).

Serving: one asyncio process with one listening socket per host, 127.0.0.2 ... 127.0.0.65
(`--hosts`, all in 127.0.0.0/8, which Linux routes to the loopback interface; nothing is
bound to 0.0.0.0); feed i is served from host 127.0.0.(2 + i % hosts), so the fetcher's
per-host limit does not serialise the run. Every response carries a strong ETag and a
Last-Modified; If-None-Match / If-Modified-Since give 304. `--latency 50-300` delays each
answer (200 or 304) by a uniform random number of milliseconds, seeded per feed and request.

Control (POST, on any host):
    /_control/churn   10% of the feeds (a seeded choice) gain 5 new entries (the 5 oldest
                      drop off) and so a new ETag; answers {"generation": g, "changed": [...]}
                      once the new bodies are ready
    /_control/stats   request counts (GET works too)

Run alone (from the repo root), e.g. to point `aggregator fetch` at it by hand:
    .venv/bin/python bench/workload.py --feeds 200 --latency 50-300 --dir /tmp/wl
    # writes /tmp/wl/site/*, /tmp/wl/feeds.yaml, serves until Ctrl-C
    .venv/bin/python bench/workload.py --feeds 100 --sha    # digest of the bytes, then exit
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import random
import re
import sys
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

from fetch_200 import (  # noqa: E402 - bench scripts are not a package
    BOILERPLATE,
    CORPUS,
    TITLE_PREFIXES,
    VOCABULARY,
    Entry,
    Feed,
    _to_html,
    render,
)

ENTRIES = 50
MIN_WORDS, MAX_WORDS = 150, 600
COPY_SHARE = 0.2
ATOM_SHARE = 0.4
HOSTS = 64
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
CHURN_SHARE = 0.1
CHURN_ENTRIES = 5
CONTROL = "/_control/"
BYLINES = ("By Staff Reporter", "By Jane Harper, Staff Writer", "By the Associated Press",
           "By Reuters staff", "By our correspondent")  # fmt: skip


@dataclass(frozen=True)
class Workload:
    """What to generate: everything else follows from these values."""

    feeds: int
    seed: int = 1
    entries: int = ENTRIES
    copy_share: float = COPY_SHARE
    anchor: datetime = ANCHOR
    vocab: bool = False  # force the fixed vocabulary even when the corpus exists

    def kind(self, i: int) -> str:
        return "atom" if _feed_params(self, i)[0] < ATOM_SHARE else "rss"

    def filename(self, i: int) -> str:
        return f"feed{i:05d}.{self.kind(i)}"


def host_of(i: int, hosts: int = HOSTS) -> str:
    return f"127.0.0.{2 + i % hosts}"


# ---------------------------------------------------------------- text

_SENTENCES: list[str] | None = None


def _sentences(vocab: bool) -> list[str]:
    """Corpus sentences (loaded once per process), or [] for the vocabulary."""
    global _SENTENCES
    if vocab:
        return []
    if _SENTENCES is None:
        seen: set[str] = set()
        if CORPUS.exists():
            with CORPUS.open(encoding="utf-8") as f:
                for line in f:
                    for para in json.loads(line)["text"].split("\n"):
                        for s in re.split(r"(?<=[.!?])\s+", para.strip()):
                            s = " ".join(s.split())
                            if 6 <= len(s.split()) <= 45:
                                seen.add(s)
        _SENTENCES = sorted(seen)
    return _SENTENCES


def text_kind(vocab: bool) -> str:
    n = len(_sentences(vocab))
    return f"corpus sentences ({n:,})" if n else f"fixed vocabulary ({len(VOCABULARY)} words)"


def _sentence(rng: random.Random, pool: list[str]) -> str:
    if pool:
        return pool[rng.randrange(len(pool))]
    return " ".join(rng.choices(VOCABULARY, k=rng.randint(8, 24))).capitalize() + "."


def _title(rng: random.Random, pool: list[str]) -> str:
    return " ".join(_sentence(rng, pool).rstrip(".!?").split()[: rng.randint(6, 12)])


@dataclass(frozen=True)
class Story:
    title: str
    paragraphs: tuple[str, ...]


def story(w: Workload, j: int, m: int) -> Story:
    """The original story of feed j's slot m."""
    rng = random.Random(f"{w.seed}:story:{j}:{m}")
    pool = _sentences(w.vocab)
    title = _title(rng, pool)
    target, words, paras = rng.randint(MIN_WORDS, MAX_WORDS), 0, []
    while words < target:
        para = []
        for _ in range(rng.randint(2, 5)):
            s = _sentence(rng, pool)
            para.append(s)
            words += len(s.split())
            if words >= target:
                break
        paras.append(" ".join(para))
    return Story(title, tuple(paras))


# ---------------------------------------------------------------- entries


def _feed_params(w: Workload, i: int) -> tuple[float, float, float]:
    """(kind draw, seconds between posts, offset of the newest initial post)."""
    rng = random.Random(f"{w.seed}:feed:{i}")
    kind = rng.random()
    spacing = rng.uniform(20 * 60, 3 * 3600)
    return kind, spacing, rng.uniform(0, spacing)


def slot_time(w: Workload, i: int, k: int) -> datetime:
    """When feed i posted its slot k (slots 0..entries-1 are the initial ones, newest last;
    churn adds slots after them)."""
    _, spacing, offset = _feed_params(w, i)
    return w.anchor + timedelta(seconds=(k - (w.entries - 1)) * spacing - offset)


def _is_copy(w: Workload, i: int, k: int) -> bool:
    return w.feeds > 1 and random.Random(f"{w.seed}:entry:{i}:{k}").random() < w.copy_share


def _source(w: Workload, rng: random.Random, i: int, when: datetime) -> tuple[int, int]:
    """An original (feed, slot) of another feed posted before `when`."""
    for _ in range(20):
        j = rng.randrange(w.feeds - 1)
        j += j >= i
        _, spacing, offset = _feed_params(w, j)
        latest = int(((when - w.anchor).total_seconds() + offset) // spacing) + w.entries - 1
        m = max(0, latest - rng.randint(0, 10))
        if not _is_copy(w, j, m):
            return j, m
    return j, m  # rare: a copy of a copy, still the same story


def entry(w: Workload, i: int, k: int, outlet: str) -> Entry:
    """Feed i's slot k: its own story, or a republished one with the usual variations."""
    rng = random.Random(f"{w.seed}:entry:{i}:{k}")
    copy = rng.random() < w.copy_share and w.feeds > 1
    published = slot_time(w, i, k) + timedelta(seconds=rng.uniform(0, 600))
    slug = f"https://{outlet.lower().replace(' ', '-')}.example.com"
    if not copy:
        s = story(w, i, k)
        link = f"{slug}/news/{k}?utm_source=rss&utm_medium=feed"
        return Entry(f"urn:bench:{w.seed}:{i}:{k}", link, s.title,
                     _to_html(rng, list(s.paragraphs), link), published)  # fmt: skip
    j, m = _source(w, rng, i, published)
    s = story(w, j, m)
    pool = _sentences(w.vocab)
    r = rng.random()
    if r < 0.3:
        title = _title(rng, pool)  # a new headline
    elif r < 0.6:
        title = rng.choice(TITLE_PREFIXES) + s.title + (f" | {outlet}" if rng.random() < 0.5 else "")
    else:
        title = s.title
    paras = list(s.paragraphs)
    if rng.random() < 0.25:  # a summary cut at 40-90 words
        cut = " ".join(" ".join(paras).split()[: rng.randint(40, 90)])
        paras = [cut + rng.choice((" […]", "… Continue reading", " Read more"))]
    else:
        if len(paras) > 2 and rng.random() < 0.4:
            paras = paras[:-1]
        if rng.random() < 0.2:
            paras.insert(0, rng.choice(BYLINES))
        r = rng.random()
        if r < 0.35:
            paras.append(rng.choice(BOILERPLATE))
        elif r < 0.5:
            paras.append(f"The post {s.title} appeared first on {outlet}.")
    if rng.random() < 0.05:
        link = f"https://bench-outlet-{j:05d}.example.com/news/{m}"  # links to the original
    else:
        link = f"{slug}/news/{k}-{j}-{m}?utm_source=rss&utm_campaign=syndication"
    return Entry(f"urn:bench:{w.seed}:{i}:{k}", link, title, _to_html(rng, paras, link), published)


def feed_body(w: Workload, i: int, self_url: str, churns: int = 0) -> tuple[bytes, datetime]:
    """Rendered feed i after `churns` churn rounds, and its Last-Modified time."""
    outlet = f"Bench Outlet {i:05d}"
    start = churns * CHURN_ENTRIES
    entries = [entry(w, i, k, outlet) for k in range(start, start + w.entries)]
    entries.sort(key=lambda e: e.published, reverse=True)
    newest = entries[0].published.replace(microsecond=0)
    feed = Feed(f"bench-outlet-{i:05d}", w.kind(i), outlet, entries)
    return render(feed, self_url, newest), newest


def _render_chunk(args: tuple[Workload, list[int], str]) -> list[tuple[int, bytes]]:
    w, indices, base = args
    return [(i, feed_body(w, i, f"{base}/{w.filename(i)}")[0]) for i in indices]


def write_site(w: Workload, directory: Path, workers: int = 2) -> int:
    """Render every feed into `directory` (one file each, in parallel); returns bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    chunks = [list(range(s, min(s + 50, w.feeds))) for s in range(0, w.feeds, 50)]
    total = 0
    work = [(w, c, "http://bench.invalid") for c in chunks]
    if workers <= 1 or len(chunks) == 1:
        results = map(_render_chunk, work)
        for res in results:
            total += _write(directory, w, res)
        return total
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for res in pool.map(_render_chunk, work):
            total += _write(directory, w, res)
    return total


def _write(directory: Path, w: Workload, rendered: list[tuple[int, bytes]]) -> int:
    for i, body in rendered:
        (directory / w.filename(i)).write_bytes(body)
    return sum(len(b) for _, b in rendered)


# ---------------------------------------------------------------- the server process


class _State:
    def __init__(self, w: Workload, site: Path, latency: tuple[float, float] | None, hosts: int):
        self.w, self.latency, self.hosts = w, latency, hosts
        self.files = [w.filename(i) for i in range(w.feeds)]
        self.index = {name: i for i, name in enumerate(self.files)}
        self.body: list[bytes] = []
        self.etag: list[str] = []
        self.modified: list[datetime] = []
        self.churns = [0] * w.feeds
        self.requests = [0] * w.feeds
        self.generation = 0
        self.counts = {"200": 0, "304": 0, "404": 0, "control": 0}
        for i, name in enumerate(self.files):
            self._set(i, (site / name).read_bytes(), _newest(w, i, 0))

    def _set(self, i: int, body: bytes, modified: datetime) -> None:
        tag = '"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'
        if i < len(self.body):
            self.body[i], self.etag[i], self.modified[i] = body, tag, modified
        else:
            self.body.append(body)
            self.etag.append(tag)
            self.modified.append(modified)

    def churn(self) -> list[int]:
        self.generation += 1
        rng = random.Random(f"{self.w.seed}:churn:{self.generation}")
        changed = sorted(rng.sample(range(self.w.feeds), max(1, round(self.w.feeds * CHURN_SHARE))))
        for i in changed:
            self.churns[i] += 1
            body, modified = feed_body(self.w, i, "http://bench.invalid/" + self.files[i], self.churns[i])
            self._set(i, body, modified)
        return changed

    def delay(self, i: int) -> float:
        if not self.latency:
            return 0.0
        self.requests[i] += 1
        rng = random.Random(f"{self.w.seed}:latency:{i}:{self.requests[i]}")
        return rng.uniform(*self.latency) / 1000


def _newest(w: Workload, i: int, churns: int) -> datetime:
    # Same value feed_body returns, without rendering: the newest slot's time
    start = churns * CHURN_ENTRIES
    times = []
    for k in range(start, start + w.entries):
        rng = random.Random(f"{w.seed}:entry:{i}:{k}")
        rng.random()
        times.append(slot_time(w, i, k) + timedelta(seconds=rng.uniform(0, 600)))
    return max(times).replace(microsecond=0)


def _not_modified(state: _State, i: int, headers: dict[str, str]) -> bool:
    inm = headers.get("if-none-match")
    if inm is not None:
        return inm.strip() == "*" or state.etag[i] in (t.strip() for t in inm.split(","))
    ims = headers.get("if-modified-since")
    if ims:
        try:
            return parsedate_to_datetime(ims) >= state.modified[i]
        except (TypeError, ValueError):
            return False
    return False


async def _handle(state: _State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = (lines[0].split(" ") + ["", ""])[:3]
            headers = {}
            for line in lines[1:]:
                k, sep, v = line.partition(":")
                if sep:
                    headers[k.strip().lower()] = v.strip()
            if int(headers.get("content-length") or 0):
                await reader.readexactly(int(headers["content-length"]))
            path = target.split("?", 1)[0]
            extra = ""
            if path.startswith(CONTROL):
                state.counts["control"] += 1
                if path == CONTROL + "churn" and method == "POST":
                    payload = {"generation": state.generation, "changed": state.churn()}
                    payload["generation"] = state.generation
                else:
                    payload = {"generation": state.generation, **state.counts}
                status, body, ctype = "200 OK", json.dumps(payload).encode(), "application/json"
            elif (i := state.index.get(path.lstrip("/"))) is not None:
                delay = state.delay(i)
                if delay:
                    await asyncio.sleep(delay)
                ctype = ("application/atom+xml" if path.endswith(".atom") else
                         "application/rss+xml") + "; charset=utf-8"  # fmt: skip
                extra = (f"ETag: {state.etag[i]}\r\n"
                         f"Last-Modified: {format_datetime(state.modified[i], usegmt=True)}\r\n")  # fmt: skip
                if _not_modified(state, i, headers):
                    status, body = "304 Not Modified", b""
                    state.counts["304"] += 1
                else:
                    status, body = "200 OK", state.body[i]
                    state.counts["200"] += 1
            else:
                state.counts["404"] += 1
                status, body, ctype = "404 Not Found", b"not found\n", "text/plain"
            close = headers.get("connection", "").lower() == "close"
            writer.write(
                (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n{extra}"
                 f"Content-Length: {len(body) if not status.startswith('304') else 0}\r\n"
                 f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n").encode()
                + (body if method != "HEAD" and not status.startswith("304") else b"")
            )  # fmt: skip
            await writer.drain()
            if close:
                return
    except ConnectionError:
        pass
    finally:
        writer.close()


def _serve(w: Workload, site: str, latency, hosts: int, conn) -> None:
    """Child process: serve the rendered feeds from memory on `hosts` loopback sockets."""
    state = _State(w, Path(site), latency, hosts)

    async def main() -> None:
        ports = []
        servers = []
        for h in range(min(hosts, w.feeds) or 1):
            srv = await asyncio.start_server(
                lambda r, wr: _handle(state, r, wr), host_of(h, hosts), 0, backlog=1024
            )
            servers.append(srv)
            ports.append(srv.sockets[0].getsockname()[1])
        conn.send(ports)
        conn.close()
        await asyncio.Event().wait()

    asyncio.run(main())


class FeedServer:
    """Parent-side handle: renders the site, starts the server process, knows the URLs.

        with FeedServer(Workload(1000), workdir / "site", latency=(50, 300)) as srv:
            srv.urls[0]; srv.churn(); srv.stats()
    """

    def __init__(self, w: Workload, site: Path, latency=None, hosts: int = HOSTS,
                 render_workers: int = 2):  # fmt: skip
        self.w, self.site, self.latency, self.hosts = w, site, latency, hosts
        self.render_workers = render_workers
        self.proc: multiprocessing.process.BaseProcess | None = None
        self.urls: list[str] = []
        self.bytes = 0
        self.render_seconds = 0.0

    def start(self) -> FeedServer:
        t0 = time.perf_counter()
        if not all((self.site / self.w.filename(i)).exists() for i in range(self.w.feeds)):
            self.bytes = write_site(self.w, self.site, self.render_workers)
        else:
            self.bytes = sum((self.site / self.w.filename(i)).stat().st_size for i in range(self.w.feeds))
        self.render_seconds = time.perf_counter() - t0
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_serve, daemon=True,
                                args=(self.w, str(self.site), self.latency, self.hosts, child))  # fmt: skip
        self.proc.start()
        if not parent.poll(600):
            raise RuntimeError("feed server did not start")
        ports = parent.recv()
        self.urls = [
            f"http://{host_of(i, self.hosts)}:{ports[i % len(ports)]}/{self.w.filename(i)}"
            for i in range(self.w.feeds)
        ]
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _control(self, name: str, method: str = "POST") -> dict:
        base = self.urls[0].rsplit("/", 1)[0]
        req = urllib.request.Request(base + CONTROL + name, data=b"" if method == "POST" else None,
                                     method=method)  # fmt: skip
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=600) as resp:
            return json.loads(resp.read())

    def churn(self) -> list[int]:
        """10% of the feeds gain 5 entries; returns their indices once they are served."""
        return self._control("churn")["changed"]

    def stats(self) -> dict:
        return self._control("stats", "GET")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.join(5)
            self.proc = None

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_config(path: Path, urls: list[str], settings: dict | None = None) -> None:
    """feeds.yaml listing `urls` (named like the generator's outlets)."""
    lines = []
    if settings:
        lines.append("settings:")
        lines += [f"  {k}: {v}" for k, v in settings.items()]
    lines.append("feeds:")
    for i, url in enumerate(urls):
        lines += [f"  - url: {url}", f"    name: Bench Outlet {i:05d}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def parse_latency(text: str | None) -> tuple[float, float] | None:
    """'50-300' -> (50.0, 300.0) ms; '50' -> (50.0, 50.0); None/'0' -> None."""
    if not text or text in ("0", "none"):
        return None
    lo, _, hi = text.partition("-")
    return float(lo), float(hi or lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--feeds", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--latency", help="per-request delay in ms, e.g. 50-300 or 50")
    ap.add_argument("--hosts", type=int, default=HOSTS, help=f"loopback hosts ({HOSTS})")
    ap.add_argument("--vocab", action="store_true", help="fixed vocabulary, not the corpus")
    ap.add_argument("--dir", type=Path, help="work dir (site/ and feeds.yaml)")
    ap.add_argument("--sha", action="store_true", help="print a digest of all feeds' bytes and exit")
    args = ap.parse_args(argv)
    w = Workload(args.feeds, args.seed, vocab=args.vocab)
    if args.sha:
        h = hashlib.sha256()
        for _, body in _render_chunk((w, list(range(w.feeds)), "http://bench.invalid")):
            h.update(body)
        print(f"{w.feeds} feeds, seed {w.seed}, {text_kind(w.vocab)}: sha256 {h.hexdigest()}")
        return 0
    if not args.dir:
        ap.error("--dir is required to serve")
    with FeedServer(w, args.dir / "site", parse_latency(args.latency), args.hosts) as srv:
        write_config(args.dir / "feeds.yaml", srv.urls)
        print(f"{w.feeds} feeds ({text_kind(w.vocab)}), {srv.bytes / 1e6:.1f} MB, rendered in "
              f"{srv.render_seconds:.1f}s; serving from pid {srv.pid} on "
              f"{min(args.hosts, w.feeds)} hosts; config {args.dir / 'feeds.yaml'}")  # fmt: skip
        print(f"churn: curl -X POST {srv.urls[0].rsplit('/', 1)[0]}{CONTROL}churn")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
