"""Dedup speed benchmark: items per second of the dedup stage alone, its memory, and the
start-up index rebuild, against a naive datasketch baseline.

Items are ~300-word texts built deterministically (seeded) from sentences of the real
articles in ../shared/corpus/gva_dev.jsonl (synthetic text from a fixed vocabulary when the
corpus is missing); ~30% are near-copies of earlier items: syndicated (new headline, byline,
a few words changed), edited (a sentence dropped, ~8% of words changed) or truncated
(the first 40-60 words and "…").

Measured, for each size (10k and 100k items; --quick: 2k):
  (a) in memory: shingle + sign + common paragraphs + LSH query + verify + choose cluster
      + index add, with aggregator.dedup's Signer and DedupIndex (signature.py, index.py) and the per-item decision
      Clusterer makes (clustering.decide: own text, exact shortcut keys looked up in the
      same query, the feed and title rules); items are signed BATCH at a time
      (Signer.sign_many, as one feed's new entries are) and placed one by one;
  (b) with SQLite: the real Clusterer.assign() against a real Store in a temp dir, items
      written with store.insert_items in batches of 50, one transaction per batch ("feed");
      the figure covers the whole transaction (insert + assign + commit) and the full-text
      indexing of the items, which a poll run does in batches (aggregator/store/migrations/sqlite/005); the
      line under it is the same run without that indexing (search is not dedup, but it is
      paid on the same write path, so the target line includes it);
  (c) naive baseline (2k items): datasketch MinHash(num_perm=128) with update(shingle.encode())
      per word 3-gram + MinHashLSH(threshold=0.5, num_perm=128) query/insert + verify;
      ratio = (a) on the same 2k items / naive;
  (d) memory per indexed item: DedupIndex.nbytes / len after a bulk build + finish_bulk()
      (signatures, band keys, exact keys), and the tracemalloc peak while building (128
      permutations);
  (e) index rebuild: Clusterer.load() of the largest store from (b);
  (f) content updates: the first size's items indexed, then each changed UPDATE_ROUNDS
      times (a new last line, as a live blog or a counter changes it) and placed as
      Clusterer.assign places a changed item (its row retired, the new version decided
      and added), the index compacting at the end of each batch as Clusterer.commit does;
      timed: that index work per update (signing is left out: the parse workers do it),
      the compactions within it, and the most rows the index held per item.
"copies found" is the share of near-copies that ended in their original's cluster: a
sanity check that the speed does not come from skipping work.

Run (from the repo root):
    .venv/bin/python bench/dedup_speed.py            # 10k and 100k (a few minutes)
    .venv/bin/python bench/dedup_speed.py --quick    # 2k only
    options: --sizes 10000,50000  --seed N  --json
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator.config import DedupSettings  # noqa: E402
from aggregator.dedup.evidence import EntryFacts, paragraph_keys  # noqa: E402
from aggregator.dedup.index import DedupIndex
from aggregator.dedup.shingles import word_shingles, words  # noqa: E402
from aggregator.dedup.signature import Signer
from aggregator.ingest.normalize import content_hash  # noqa: E402
from aggregator.records import Item  # noqa: E402
from aggregator.service.clustering import Clusterer, Placement, decide, exact_keys  # noqa: E402
from aggregator.store.database import Store  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "gva_dev.jsonl"
COPY_SHARE = 0.30
ITEM_WORDS = 300
BATCH = 50  # items per transaction, as one feed's new entries
FEEDS = 200
NAIVE_ITEMS = 2000
UPDATE_ROUNDS = 3
TARGETS = {
    "naive_ratio": 10.0,  # ours / naive, at least
    "memory_items_per_s": 4000.0,
    "sqlite_items_per_s": 2500.0,
    "rebuild_100k_s": 5.0,  # at most
    "bytes_per_item": 1500.0,  # at most
}
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class BenchItem:
    title: str
    text: str
    source: int  # index of the original this is a copy of; -1 for an original


# ---------------------------------------------------------------- items


def corpus_sentences() -> list[str] | None:
    """Sentences of 6-60 words from the corpus texts, in file order; None if it is missing."""
    if not CORPUS.exists():
        return None
    out: list[str] = []
    with CORPUS.open(encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            for s in _SENTENCE.split(" ".join(text.split())):
                if 6 <= len(s.split()) <= 60:
                    out.append(s)
    return out


def synthetic_sentences(rng: random.Random, count: int = 60_000) -> list[str]:
    """Fallback: sentences from a fixed pseudo-word vocabulary, Zipf-like word frequencies."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(8000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    return [
        " ".join(rng.choices(vocab, weights, k=rng.randint(8, 30))).capitalize() + "."
        for _ in range(count)
    ]


def make_items(n: int, sentences: list[str], seed: int) -> list[BenchItem]:
    """n items, ~30% of them near-copies of an earlier original."""
    rng = random.Random(seed)
    filler = [w for s in sentences[:2000] for w in s.split()]
    items: list[BenchItem] = []
    originals: list[int] = []
    for _ in range(n):
        if originals and rng.random() < COPY_SHARE:
            src = rng.choice(originals[-5000:])  # stories are copied while they are fresh
            items.append(copy_of(items[src], src, rng, filler))
            continue
        body: list[str] = []
        count = 0
        while count < ITEM_WORDS:
            s = sentences[rng.randrange(len(sentences))]
            body.append(s)
            count += len(s.split())
        title = " ".join(rng.choice(sentences).split()[:10])
        originals.append(len(items))
        items.append(BenchItem(title, " ".join(body), -1))
    return items


def copy_of(item: BenchItem, src: int, rng: random.Random, filler: list[str]) -> BenchItem:
    kind = rng.random()
    tokens = item.text.split()
    new_title = " ".join(rng.choices(filler, k=9))
    if kind < 0.25:  # truncated summary
        return BenchItem(item.title, " ".join(tokens[: rng.randint(40, 60)]) + " …", src)
    rate = 0.03 if kind < 0.6 else 0.08
    tokens = [rng.choice(filler) if rng.random() < rate else t for t in tokens]
    text = " ".join(tokens)
    if kind < 0.6:  # syndicated: new headline and a byline
        return BenchItem(new_title, f"By {rng.choice(filler)} staff. " + text, src)
    parts = _SENTENCE.split(text)  # edited: one sentence dropped
    if len(parts) > 3:
        del parts[rng.randrange(1, len(parts))]
    return BenchItem(item.title, " ".join(parts), src)


def item_url(i: int) -> str:
    return f"https://site{i % FEEDS}.example.com/{i}"


def copies_found(items: list[BenchItem], cluster_of: list[int]) -> float:
    pairs = [(i, it.source) for i, it in enumerate(items) if it.source >= 0]
    if not pairs:
        return 1.0
    return sum(cluster_of[i] == cluster_of[s] for i, s in pairs) / len(pairs)


# ---------------------------------------------------------------- (a) in memory


def run_memory(items: list[BenchItem], settings: DedupSettings, seen: int) -> dict:
    signer = Signer(settings)
    index = DedupIndex(settings)
    cluster_of: list[int] = []
    next_cluster = 1
    urls = [item_url(i) for i in range(len(items))]
    hashes = [content_hash(it.title, it.text) for it in items]  # computed by normalize, not here
    published = datetime.fromtimestamp(seen, UTC)
    started = time.perf_counter()
    sigs: list = []
    for i, it in enumerate(items):
        if i % BATCH == 0:
            sigs = signer.sign_many([(x.title, x.text) for x in items[i : i + BATCH]])
        w = Placement(i, (i // BATCH) % FEEDS + 1, urls[i], hashes[i], published, seen, sigs[i % BATCH], it.title, it.text)
        d = decide(index, signer, w)
        if d.cluster is not None:
            cluster = d.cluster
        else:
            cluster, next_cluster = next_cluster, next_cluster + 1
        index.add(i, cluster, seen, d.signature, d.exact, d.facts, d.paragraphs)
        cluster_of.append(cluster)
    elapsed = time.perf_counter() - started
    return {
        "items": len(items),
        "seconds": elapsed,
        "items_per_s": len(items) / elapsed,
        "clusters": next_cluster - 1,
        "copies_found": copies_found(items, cluster_of),
    }


# ---------------------------------------------------------------- (b) with SQLite


def run_sqlite(items: list[BenchItem], settings: DedupSettings, now: datetime, db: Path) -> dict:
    store = Store.open(db)
    try:
        conn = store.conn
        with store.transaction():
            for f in range(FEEDS):
                conn.execute(
                    "INSERT INTO feeds (url, name, created_at) VALUES (?, ?, ?)",
                    (f"https://feed{f}.example.com/rss", f"feed {f}", now.strftime("%Y-%m-%dT%H:%M:%SZ")),
                )
        records = [
            Item(
                key=f"item-{i}", url=item_url(i), canonical_url=item_url(i), title=it.title,
                text=it.text, author=None, published=now, updated=None,
                content_hash=content_hash(it.title, it.text),
            )  # fmt: skip
            for i, it in enumerate(items)
        ]
        clusterer = Clusterer(settings)
        assign_s = 0.0
        started = time.perf_counter()
        for b, start in enumerate(range(0, len(records), BATCH)):
            batch = records[start : start + BATCH]
            feed_id = b % FEEDS + 1
            with store.transaction():
                ids = store.insert_items(feed_id, batch, now)
                t = time.perf_counter()
                clusterer.assign(store, [(i, feed_id, it) for i, it in zip(ids, batch, strict=True)], [], now)
                assign_s += time.perf_counter() - t
            clusterer.commit()
        search_started = time.perf_counter()
        store.index_search()  # the full-text index, filled in batches as a poll run does
        search_s = time.perf_counter() - search_started
        elapsed = time.perf_counter() - started
        rows = conn.execute("SELECT cluster_id FROM items ORDER BY id").fetchall()
        return {
            "items": len(items),
            "seconds": elapsed,
            "items_per_s": len(items) / elapsed,
            "assign_seconds": assign_s,
            "search_index_seconds": search_s,
            "clusters": store.count("clusters"),
            "copies_found": copies_found(items, [r[0] for r in rows]),
        }
    finally:
        store.close()


# ---------------------------------------------------------------- (c) naive baseline


def run_naive(items: list[BenchItem]) -> dict:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=0.5, num_perm=128)
    sigs: dict[int, MinHash] = {}
    cluster_of: list[int] = []
    started = time.perf_counter()
    for i, it in enumerate(items):
        tokens = words(it.title + " " + it.text)
        m = MinHash(num_perm=128)
        for g in range(max(1, len(tokens) - 2)):
            m.update(" ".join(tokens[g : g + 3]).encode())
        best = None
        for key in lsh.query(m):
            j = m.jaccard(sigs[key])
            if j >= 0.5 and (best is None or j > best[1]):
                best = (key, j)
        cluster_of.append(cluster_of[best[0]] if best else i)
        lsh.insert(i, m)
        sigs[i] = m
    elapsed = time.perf_counter() - started
    return {
        "items": len(items),
        "seconds": elapsed,
        "items_per_s": len(items) / elapsed,
        "copies_found": copies_found(items, cluster_of),
    }


# ---------------------------------------------------------------- (d) memory, (e) rebuild


def run_index_memory(items: list[BenchItem], settings: DedupSettings, seen: int) -> dict:
    signer = Signer(settings)
    sigs = signer.sign_many([(it.title, it.text) for it in items])
    exact = np.array([exact_keys(item_url(i), content_hash(it.title, it.text)) for i, it in enumerate(items)],
                     dtype=np.uint64)  # fmt: skip
    n = len(sigs)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    index = DedupIndex(settings)
    for start in range(0, n, 20_000):  # as Clusterer.load feeds it
        chunk = sigs[start : start + 20_000]
        k = len(chunk)
        index.add_many(np.arange(start, start + k), np.arange(start, start + k),
                       np.full(k, seen, dtype=np.int64), chunk, bulk=True,
                       exact=exact[start : start + k],
                       facts=[EntryFacts(1 + j % FEEDS, it.title) for j, it in enumerate(items[start : start + k], start)],
                       paragraphs=[paragraph_keys(it.text) for it in items[start : start + k]])  # fmt: skip
    index.finish_bulk()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "items": n,
        "num_perm": settings.num_perm,
        "bytes_per_item": index.nbytes / len(index),
        "tracemalloc_peak_bytes_per_item": (peak - base) / n,
        "words_per_item": float(np.mean([len(words(it.text)) for it in items[:2000]])),
        "shingles_per_item": float(np.mean([len(word_shingles(words(it.text), 3)) for it in items[:2000]])),
    }


def run_rebuild(db: Path, settings: DedupSettings, now: datetime) -> dict:
    store = Store.open(db)
    try:
        clusterer = Clusterer(settings)
        loaded = clusterer.load(store, now + timedelta(seconds=1))
        return {"items": loaded, "seconds": clusterer.rebuild_seconds}
    finally:
        store.close()


# ---------------------------------------------------------------- (f) content updates


def run_updates(items: list[BenchItem], settings: DedupSettings, seen: int) -> dict:
    signer = Signer(settings)
    index = DedupIndex(settings)
    rng = random.Random(len(items))
    published = datetime.fromtimestamp(seen, UTC)
    urls = [item_url(i) for i in range(len(items))]
    next_cluster = 1

    def place(i: int, title: str, text: str, sig) -> None:
        nonlocal next_cluster
        w = Placement(i, (i // BATCH) % FEEDS + 1, urls[i], content_hash(title, text), published, seen, sig, title, text)
        d = decide(index, signer, w)
        if d.cluster is None:
            cluster, next_cluster = next_cluster, next_cluster + 1
        else:
            cluster = d.cluster
        index.add(i, cluster, seen, d.signature, d.exact, d.facts, d.paragraphs)

    sigs = signer.sign_many([(it.title, it.text) for it in items])
    for i, (it, sig) in enumerate(zip(items, sigs, strict=True)):
        place(i, it.title, it.text, sig)
    updates, timed, compact_s, compactions, most_rows = 0, 0.0, 0.0, 0, index.n
    for _ in range(UPDATE_ROUNDS):
        for start in range(0, len(items), BATCH):
            batch = [(i, it.title, f"{it.text} Updated: {rng.randint(100, 999_999):,} readers so far.")
                     for i, it in enumerate(items[start : start + BATCH], start)]  # fmt: skip
            batch_sigs = signer.sign_many([(title, text) for _, title, text in batch])
            t0 = time.perf_counter()
            for (i, title, text), sig in zip(batch, batch_sigs, strict=True):
                index.kill(index.rows_of_item(i))
                place(i, title, text, sig)
            most_rows = max(most_rows, index.n)
            t1 = time.perf_counter()
            compactions += index.compact()
            t2 = time.perf_counter()
            timed, compact_s, updates = timed + t2 - t0, compact_s + t2 - t1, updates + len(batch)
    return {
        "items": len(items),
        "updates": updates,
        "seconds": timed,
        "updates_per_s": updates / timed,
        "us_per_update": timed / updates * 1e6,
        "compactions": compactions,
        "compaction_seconds": compact_s,
        "most_rows_per_item": most_rows / len(items),
        "rows_at_end": index.n,
    }


# ---------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def print_table(result: dict) -> None:
    t = TARGETS
    print(f"dedup_speed: {result['source']}; {int(COPY_SHARE * 100)}% near-copies; "
          f"num_perm {result['num_perm']}; python {result['python']}")  # fmt: skip
    rows = [("measure", "items", "seconds", "items/s", "copies found", "target", "")]
    for r in result["memory"]:
        ok = r["items_per_s"] >= t["memory_items_per_s"]
        rows.append(("(a) in-memory", r["items"], f"{r['seconds']:.2f}", f"{r['items_per_s']:,.0f}",
                     f"{r['copies_found']:.1%}", f">= {t['memory_items_per_s']:,.0f}/s", verdict(ok)))  # fmt: skip
    for r in result["sqlite"]:
        ok = r["items_per_s"] >= t["sqlite_items_per_s"]
        rows.append(("(b) with SQLite", r["items"], f"{r['seconds']:.2f}", f"{r['items_per_s']:,.0f}",
                     f"{r['copies_found']:.1%}", f">= {t['sqlite_items_per_s']:,.0f}/s", verdict(ok)))  # fmt: skip
        dedup_s = r["seconds"] - r["search_index_seconds"]
        rows.append(("    without search index", r["items"], f"{dedup_s:.2f}", f"{r['items'] / dedup_s:,.0f}",
                     "", f"(FTS5: {r['search_index_seconds']:.2f} s)", ""))  # fmt: skip
    n = result["naive"]
    rows.append(("(c) naive datasketch", n["items"], f"{n['seconds']:.2f}", f"{n['items_per_s']:,.0f}",
                 f"{n['copies_found']:.1%}", "", ""))  # fmt: skip
    o = result["ours_on_naive_subset"]
    ratio = result["naive_ratio"]
    rows.append(("    ours, same items", o["items"], f"{o['seconds']:.2f}", f"{o['items_per_s']:,.0f}",
                 f"{o['copies_found']:.1%}", f"ratio {ratio:.1f}x >= {t['naive_ratio']:.0f}x",
                 verdict(ratio >= t["naive_ratio"])))  # fmt: skip
    rb = result["rebuild"]
    scaled = rb["seconds"] * 100_000 / max(rb["items"], 1)
    rows.append(("(e) index rebuild", rb["items"], f"{rb['seconds']:.2f}", f"{rb['items'] / rb['seconds']:,.0f}",
                 "", f"100k < {t['rebuild_100k_s']:.0f}s (~{scaled:.1f}s)",
                 verdict(scaled < t["rebuild_100k_s"])))  # fmt: skip
    u = result["updates"]
    rows.append(("(f) content updates", u["updates"], f"{u['seconds']:.2f}", f"{u['updates_per_s']:,.0f}", "",
                 f"{u['us_per_update']:.0f} us/update", ""))  # fmt: skip
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    m = result["index_memory"]
    print(f"(d) memory, {m['items']:,} items indexed ({m['num_perm']} permutations, "
          f"{m['shingles_per_item']:.0f} shingles/item): DedupIndex.nbytes {m['bytes_per_item']:,.0f} B/item, "
          f"tracemalloc peak {m['tracemalloc_peak_bytes_per_item']:,.0f} B/item; "
          f"target <= {t['bytes_per_item']:,.0f} B/item: {verdict(m['bytes_per_item'] <= t['bytes_per_item'])}")  # fmt: skip
    print(f"(f) {u['items']:,} items changed {u['updates'] // u['items']} times each: at most "
          f"{u['most_rows_per_item']:.2f} index rows per item, {u['rows_at_end']:,} at the end; "
          f"{u['compactions']} compactions, {u['compaction_seconds']:.2f} s of the {u['seconds']:.2f} s")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2k items only")
    p.add_argument("--sizes", help="comma-separated item counts (default 10000,100000)")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    sizes = [2000] if args.quick else [10_000, 100_000]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    settings = DedupSettings()
    now = datetime.now(UTC).replace(microsecond=0)
    seen = int(now.timestamp())

    sentences = corpus_sentences()
    if sentences is None:
        source = f"corpus {CORPUS} not found: synthetic text (fixed vocabulary, seed {args.seed})"
        print(f"note: {source}", file=sys.stderr)
        sentences = synthetic_sentences(random.Random(args.seed))
    else:
        source = f"sentences of {CORPUS.name} ({len(sentences):,} sentences)"
    largest = max(sizes)
    items = make_items(largest, sentences, args.seed)

    result: dict = {"source": source, "num_perm": settings.num_perm, "sizes": sizes,
                    "python": sys.version.split()[0], "targets": TARGETS, "seed": args.seed}  # fmt: skip
    result["memory"] = [run_memory(items[:n], settings, seen) for n in sizes]
    with tempfile.TemporaryDirectory(prefix="dedup_speed_") as tmp:
        result["sqlite"] = []
        for n in sizes:
            db = Path(tmp) / f"bench_{n}.db"
            result["sqlite"].append(run_sqlite(items[:n], settings, now, db))
        result["rebuild"] = run_rebuild(Path(tmp) / f"bench_{largest}.db", settings, now)
    subset = items[: min(NAIVE_ITEMS, largest)]
    result["naive"] = run_naive(subset)
    result["ours_on_naive_subset"] = run_memory(subset, settings, seen)
    result["naive_ratio"] = result["ours_on_naive_subset"]["items_per_s"] / result["naive"]["items_per_s"]
    result["index_memory"] = run_index_memory(items, settings, seen)
    result["updates"] = run_updates(items[: min(sizes)], settings, seen)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
