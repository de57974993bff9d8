"""Story-tier quality: pairwise precision and recall against gva_dev's incident labels.

Every article of ../shared/corpus/gva_dev.jsonl is one copy cluster (a few percent of
same-incident pairs are syndicated copies, which the copy tier would join anyway), its
outlet (`source`) its feed, its story time its published date. The clusters are placed
in published order (ties in file order) by the real story index (aggregator.dedup.stories)
at each threshold of a curve, next to a baseline: naive TF-IDF cosine of the whole text (IDF
from the whole file), single link between any two articles within the window.

Pairs: two articles put in one story. Precision: the share of those pairs in one incident.
Recall: the share of same-incident pairs joined, of all 2,109 and of the 1,237 whose dates
are within the window (no tier joins across a larger gap). Articles of different incidents
are all about gun violence in US towns: hard negatives.

The threshold default (StorySettings.threshold) is the lowest point of the curve (a 0.05
grid) with pair precision >= 0.9.

Run (from the repo root):
    .venv/bin/python bench/story_quality.py            # the curves, the time and memory per cluster
    .venv/bin/python bench/story_quality.py --quick    # CI smoke run: 3 thresholds
    options: --json  --thresholds 0.2,0.3  --window 72h
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregator.config import StorySettings  # noqa: E402
from aggregator.dedup.stories import StoryIndex, story_terms  # noqa: E402
from aggregator.units import parse_duration  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "gva_dev.jsonl"
THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6)
QUICK_THRESHOLDS = (0.1, 0.15, 0.2)


@dataclass(frozen=True)
class Article:
    label: str
    source: str
    title: str
    text: str
    time: float


def load(path: Path = CORPUS) -> list[Article]:
    """The articles in published order (ties in file order), as the tier would see them."""
    if not path.exists():
        sys.exit(f"{path} not found: this benchmark needs ../shared/corpus (see the README)")
    rows = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    articles = [
        Article(r["cluster"], r["source"], r["title"], r["text"],
                datetime.fromisoformat(r["published"].replace("Z", "+00:00")).timestamp())
        for r in rows
    ]  # fmt: skip
    return sorted(articles, key=lambda a: a.time)  # sorted() is stable: ties keep file order


def pair_scores(groups: Sequence[int], articles: Sequence[Article], window: float) -> dict:
    """Pairwise precision and recall of a grouping (one group id per article)."""
    members = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    joined = correct = 0
    for idx in members.values():
        for a, b in itertools.combinations(idx, 2):
            joined += 1
            correct += articles[a].label == articles[b].label
    by_label = defaultdict(list)
    for i, a in enumerate(articles):
        by_label[a.label].append(i)
    gold = gold_near = near_joined = 0
    for idx in by_label.values():
        for a, b in itertools.combinations(idx, 2):
            gold += 1
            if abs(articles[a].time - articles[b].time) <= window:
                gold_near += 1
                near_joined += groups[a] == groups[b]
    sizes = Counter(len(v) for v in members.values())
    return {
        "pairs": joined,
        "precision": correct / joined if joined else 1.0,
        "recall": correct / gold if gold else 0.0,
        "recall_in_window": near_joined / gold_near if gold_near else 0.0,
        "gold": gold,
        "gold_in_window": gold_near,
        "stories_of_2+": sum(n for s, n in sizes.items() if s >= 2),
        "largest": max(sizes),
    }


def place_all(articles: Sequence[Article], threshold: float, window: float) -> tuple[list[int], float]:
    """The story of each article placed by the real index; and seconds per cluster."""
    feeds: dict[str, int] = {}
    index = StoryIndex(window=window, threshold=threshold)
    groups = []
    started = time.perf_counter()
    for cluster_id, a in enumerate(articles, 1):
        feed = feeds.setdefault(a.source, len(feeds) + 1)
        groups.append(index.place(cluster_id, feed, a.time, story_terms(a.title, a.text)).story_id)
    return groups, (time.perf_counter() - started) / len(articles)


MEMORY_ROUNDS = 6  # the corpus placed this many times over: 17,622 clusters


def memory_per_cluster(articles: Sequence[Article], threshold: float) -> tuple[float, float]:
    """Bytes the story index holds per cluster (tracemalloc): (in all, per cluster added
    in the last round), the corpus placed MEMORY_ROUNDS times over, a cluster every 20 s
    (a busy window: every cluster a candidate for the others), the terms made beforehand
    as the parse workers make them. The last round's figure is what a large index costs
    per cluster: the IDF's bounded part (the last 10,000 clusters' terms) is paid by then."""
    import gc
    import tracemalloc

    terms = [story_terms(a.title, a.text) for a in articles]
    feeds: dict[str, int] = {}
    gc.collect()
    tracemalloc.start()
    try:
        index = StoryIndex(window=72 * 3600, threshold=threshold, retention=14 * 86400)
        n = 0
        before = 0
        for round_ in range(MEMORY_ROUNDS):
            if round_ == MEMORY_ROUNDS - 1:
                gc.collect()
                before = tracemalloc.get_traced_memory()[0]
            for a, t in zip(articles, terms, strict=True):
                n += 1
                index.place(n, feeds.setdefault(a.source, len(feeds) + 1), n * 20.0, t)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return held / len(index), (held - before) / len(articles)


_TOKEN = re.compile(r"[^\W_]+")


def baseline(articles: Sequence[Article], thresholds: Sequence[float], window: float) -> dict[float, list[int]]:
    """Naive TF-IDF cosine of the whole title and text, single link within the window."""
    import numpy as np
    from scipy.sparse import csr_matrix

    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for i, a in enumerate(articles):
        counts = Counter(_TOKEN.findall(f"{a.title}\n{a.text}".lower()))
        for term, n in counts.items():
            rows.append(i)
            cols.append(vocab.setdefault(term, len(vocab)))
            vals.append(1.0 + math.log(n))
    x = csr_matrix((vals, (rows, cols)), shape=(len(articles), len(vocab)))
    df = np.bincount(x.indices, minlength=len(vocab))
    x = x.multiply(np.log((len(articles) + 1) / (df + 1))).tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = csr_matrix(x.multiply(1 / np.maximum(norms, 1e-12)[:, None]))
    sims = (x @ x.T).tocoo()
    times = np.array([a.time for a in articles])
    keep = (sims.row < sims.col) & (np.abs(times[sims.row] - times[sims.col]) <= window)
    pi, pj, ps = sims.row[keep], sims.col[keep], sims.data[keep]
    out = {}
    for t in thresholds:
        parent = list(range(len(articles)))
        for i, j in zip(pi[ps >= t], pj[ps >= t], strict=True):
            a, b = _root(parent, int(i)), _root(parent, int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
        out[t] = [_root(parent, i) for i in range(len(articles))]
    return out


def _root(parent: list[int], i: int) -> int:
    """Union-find's root of i, halving the path."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--thresholds", help="comma-separated, e.g. 0.2,0.3")
    parser.add_argument("--window", default="72h")
    args = parser.parse_args(argv)
    window = parse_duration(args.window)
    thresholds = (
        tuple(float(t) for t in args.thresholds.split(","))
        if args.thresholds
        else QUICK_THRESHOLDS if args.quick else THRESHOLDS
    )
    articles = load()
    ours, costs = [], []
    for t in thresholds:
        groups, per_cluster = place_all(articles, t, window)
        ours.append({"threshold": t, **pair_scores(groups, articles, window)})
        costs.append(per_cluster)
    base = [{"threshold": t, **pair_scores(g, articles, window)}
            for t, g in baseline(articles, thresholds, window).items()]  # fmt: skip
    eligible = [r for r in ours if r["precision"] >= 0.9]
    chosen = min(eligible, key=lambda r: r["threshold"]) if eligible else None
    result = {
        "articles": len(articles),
        "window_s": window,
        "ours": ours,
        "baseline": base,
        "chosen": chosen,
        "default_threshold": StorySettings().threshold,
        "us_per_cluster": 1e6 * min(costs),
        "bytes_per_cluster": memory_per_cluster(articles, StorySettings().threshold),  # (in all, added)
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"gva_dev: {len(articles)} articles, window {window / 3600:g} h; same-incident pairs: "
          f"{ours[0]['gold']}, {ours[0]['gold_in_window']} within the window (R(win): of those)")  # fmt: skip
    print(f"{'threshold':>9} | {'ours P':>7} {'R':>6} {'R(win)':>6} {'pairs':>6} {'largest':>7} | "
          f"{'baseline P':>10} {'R':>6} {'R(win)':>6} {'pairs':>6} {'largest':>7}")
    for o, b in zip(ours, base, strict=True):
        print(f"{o['threshold']:>9.2f} | {o['precision']:>7.3f} {o['recall']:>6.3f} {o['recall_in_window']:>6.3f} "
              f"{o['pairs']:>6} {o['largest']:>7} | {b['precision']:>10.3f} {b['recall']:>6.3f} "
              f"{b['recall_in_window']:>6.3f} {b['pairs']:>6} {b['largest']:>7}")  # fmt: skip
    if chosen:
        print(f"lowest threshold with pair precision >= 0.9: {chosen['threshold']:g} "
              f"(P {chosen['precision']:.3f}, R {chosen['recall']:.3f}); default: {StorySettings().threshold:g}")
    else:
        print("no threshold reached pair precision 0.9")
    print(f"story step: {result['us_per_cluster']:.1f} us per cluster (terms, IDF vector, candidates, placement); "
          f"index memory at {MEMORY_ROUNDS * len(articles):,} clusters: {result['bytes_per_cluster'][0]:.0f} bytes per "
          f"cluster in all, {result['bytes_per_cluster'][1]:.0f} per cluster added last (target <= 1 KB per indexed item)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
