"""CPU per item of the parse and normalise stages, alone: bytes -> RawFeed -> Items on the
e2e workload's feeds (bench/workload.py: RSS/Atom about 60/40, 50 entries of 150-600 words),
rendered in memory, no network, no database, one thread.

Each stage is timed with thread CPU time (robust on a busy machine, unlike wall time),
best of --repeat passes, over the same documents:

    parse_feed          what the pipeline calls (the fast lxml path, feedparser behind it)
    feedparser          parse.parse_xml_feed alone: the parser before the fast path
    normalize_entries   RawEntries -> Items (html_to_text, boilerplate, URLs, keys, dates)
      of which html_to_text   the entry bodies alone
      of which strip_boilerplate   the bodies' text alone (trigger words, line rules)

Run from the repo root (the figures are per stored item; the tree's own code is measured,
so PYTHONPATH chooses the tree):
    .venv/bin/python bench/ingest_cpu.py               # 200 feeds (10,000 items), ~1 min
    .venv/bin/python bench/ingest_cpu.py --quick       # 20 feeds
    options: --feeds N  --repeat R  --seed S  --vocab  --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import ANCHOR, Workload, feed_body, text_kind  # noqa: E402 - not a package

from aggregator.ingest import normalize  # noqa: E402
from aggregator.ingest.parse import parse_feed, parse_xml_feed  # noqa: E402

HEADERS = {
    "rss": {"content-type": "application/rss+xml"},
    "atom": {"content-type": "application/atom+xml"},
}


def best_cpu(fn, repeat: int) -> float:
    """Least thread CPU seconds of `repeat` calls of fn()."""
    best = float("inf")
    for _ in range(repeat):
        started = time.thread_time()
        fn()
        best = min(best, time.thread_time() - started)
    return best


def measure(feeds: int, repeat: int, seed: int, vocab: bool) -> dict:
    w = Workload(feeds, seed, vocab=vocab)
    docs = [
        (feed_body(w, i, f"http://bench.example/{w.filename(i)}")[0], HEADERS[w.kind(i)])
        for i in range(feeds)
    ]
    raws = [parse_feed(body, headers) for body, headers in docs]
    items = sum(len(r.entries) for r in raws)
    entries = [e for r in raws for e in r.entries]
    texts = [normalize.html_to_text(e.content, e.content_is_html) for e in entries]
    now = ANCHOR + timedelta(days=30)
    try:
        from aggregator.ingest.fastparse import parse_well_formed
    except ImportError:  # a tree from before the fast path
        fast = None
    else:
        fast = sum(parse_well_formed(body, headers) is not None for body, headers in docs)
    seconds = {
        "parse_feed": best_cpu(lambda: [parse_feed(b, h) for b, h in docs], repeat),
        "feedparser": best_cpu(lambda: [parse_xml_feed(b, h) for b, h in docs], repeat),
        "normalize_entries": best_cpu(
            lambda: [normalize.normalize_entries(r.entries, now) for r in raws], repeat
        ),
        "of which html_to_text": best_cpu(
            lambda: [normalize.html_to_text(e.content, e.content_is_html) for e in entries], repeat
        ),
        "of which strip_boilerplate": best_cpu(
            lambda: [normalize.strip_boilerplate(t) for t in texts], repeat
        ),
    }
    return {
        "feeds": feeds,
        "items": items,
        "text": text_kind(vocab),
        "xml_mb": round(sum(len(b) for b, _ in docs) / 1e6, 1),
        "fast_path_documents": fast,
        "us_per_item": {k: round(1e6 * v / items, 1) for k, v in seconds.items()},
    }


def report(r: dict) -> str:
    fast = "no fast path in this tree" if r["fast_path_documents"] is None else (
        f"{r['fast_path_documents']} of {r['feeds']} documents took the fast path")  # fmt: skip
    lines = [f"{r['feeds']} feeds, {r['items']} items, {r['xml_mb']} MB, {r['text']}; {fast}",
             f"{'stage':>28}  us/item (thread CPU, best of runs)"]  # fmt: skip
    lines += [f"{k:>28}  {v:8.1f}" for k, v in r["us_per_item"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--feeds", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vocab", action="store_true", help="fixed vocabulary, not the corpus")
    ap.add_argument("--quick", action="store_true", help="20 feeds, 2 runs (smoke run)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.feeds, args.repeat = 20, 2
    result = measure(args.feeds, args.repeat, args.seed, args.vocab)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
