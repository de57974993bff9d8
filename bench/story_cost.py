"""What the story step costs next to the rest of the dedup stage, per item.

Two corpora of bench/dedup_quality.py, served as feeds on 127.0.0.1 and fetched by the real
`aggregator fetch` into an SQLite file: the synthetic syndication corpus (3-6 copies of each
story, so most items join a cluster) and gva_dev as it is (one feed per outlet, most items
start a cluster). Then, in this process, the dedup stage runs again over every stored item
(`Clusterer.recluster`: sign, look up, place, write memberships and signatures, refresh the
clusters: what a poll does to each new item after parsing) with the story tier off and on,
alternately, best of --repeat each. Also timed directly: the calls into the story tier
(service/stories.py: terms, vector, candidates, placement, moves) within the run with it on.

Target (#15): the story step <= 20% of the dedup stage's time per item.

Run (from the repo root):
    .venv/bin/python bench/story_cost.py            # both corpora, best of 3
    .venv/bin/python bench/story_cost.py --quick    # CI smoke run: the quick corpora, best of 1
    options: --json  --repeat N
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import dedup_quality as dq  # noqa: E402
from feedserver_util import StaticFeedServer  # noqa: E402

from aggregator.config import DedupSettings, StorySettings  # noqa: E402
from aggregator.dedup.signature import Signer  # noqa: E402
from aggregator.service import stories as story_service  # noqa: E402
from aggregator.service.clustering import Clusterer  # noqa: E402
from aggregator.store.database import Store  # noqa: E402


class StepTimer:
    """Adds up the time spent inside some functions while it is entered: the story tier's
    per-item calls (service/stories.py), the story terms within them, and the signing."""

    TIMED = (
        ("story", story_service.StoryTier, ("place", "joined", "ensure")),
        ("terms", story_service, ("story_terms",)),
        ("sign", Signer, ("sign_many",)),
    )

    def __init__(self) -> None:
        self.seconds = dict.fromkeys((name for name, _, _ in self.TIMED), 0.0)
        self._saved: list[tuple[object, str, object]] = []

    def __enter__(self) -> StepTimer:
        for key, owner, names in self.TIMED:
            for name in names:
                original = getattr(owner, name)
                self._saved.append((owner, name, original))

                def timed(*args, _original=original, _key=key, **kwargs):
                    started = time.perf_counter()
                    try:
                        return _original(*args, **kwargs)
                    finally:
                        self.seconds[_key] += time.perf_counter() - started

                setattr(owner, name, timed)
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()


def recluster_seconds(db: Path, stories: StorySettings, timer: StepTimer | None = None) -> float:
    store = Store.open(db)
    try:
        started = time.perf_counter()
        if timer:
            with timer:
                Clusterer(DedupSettings(), stories).recluster(store)
        else:
            Clusterer(DedupSettings(), stories).recluster(store)
        return time.perf_counter() - started
    finally:
        store.close()


def measure(name: str, corpus: dq.Corpus, server: StaticFeedServer, workdir: Path, now: datetime, repeat: int) -> dict:
    ordered = dq.arrival_order(corpus, random.Random(1))
    dq.run_aggregator(server, corpus, ordered, workdir, name, now)
    db = workdir / "aggregator.sqlite"
    store = Store.open(db)
    items = store.count("items")
    clusters = store.conn.execute("SELECT count(*) FROM clusters").fetchone()[0]
    store.close()
    recluster_seconds(db, StorySettings())  # warm: imports, the signer's permutations, the file cache
    off, on, parts = [], [], []
    for _ in range(repeat):
        off.append(recluster_seconds(db, StorySettings(enabled=False)))
        timer = StepTimer()
        on.append(recluster_seconds(db, StorySettings(), timer))
        parts.append(timer.seconds)
    store = Store.open(db)
    stories = store.conn.execute("SELECT count(DISTINCT story_id) FROM clusters").fetchone()[0]
    store.close()
    best = min(range(repeat), key=lambda i: on[i])
    best_on, best_off = on[best], min(off)
    story, terms, sign = (parts[best][k] for k in ("story", "terms", "sign"))
    rest = best_on - story  # the dedup stage without the story step
    return {
        "corpus": name,
        "items": items,
        "clusters": clusters,
        "stories": stories,
        "off_us_per_item": 1e6 * best_off / items,
        "on_us_per_item": 1e6 * best_on / items,
        "story_step_us_per_item": 1e6 * story / items,
        "story_step_share": story / rest,
        "on_vs_off": best_on / best_off - 1,
        # online, the terms are made in the parse workers beside the signatures, and the
        # writer thread does the rest of the story step beside the rest of the dedup stage
        "terms_us_per_item": 1e6 * terms / items,
        "sign_us_per_item": 1e6 * sign / items,
        "workers_share": terms / sign,
        "writer_share": (story - terms) / (rest - sign),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeat", type=int)
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    now = datetime.now(UTC).replace(microsecond=0)
    articles = dq.load_articles(dq.CORPUS)
    synth, _ = dq.build_synthetic(articles, 1, now, quick=args.quick)
    gva, _ = dq.build_gva(articles, 1, quick=args.quick)
    rows = []
    with tempfile.TemporaryDirectory(prefix="story-cost-") as tmp, StaticFeedServer() as server:
        for name, corpus in (("synthetic", synth), ("gva_dev", gva)):
            rows.append(measure(name, corpus, server, Path(tmp) / name, now, repeat))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"dedup stage per item (recluster of what `aggregator fetch` stored), best of {repeat}")
    print(f"{'corpus':>10} {'items':>6} {'clusters':>8} {'stories':>7} | {'off us':>7} {'on us':>7} "
          f"{'on/off':>7} | {'story us':>8} {'share':>6} | {'terms us':>8} {'/sign':>6} | {'writer':>6}")  # fmt: skip
    for r in rows:
        print(f"{r['corpus']:>10} {r['items']:>6} {r['clusters']:>8} {r['stories']:>7} | "
              f"{r['off_us_per_item']:>7.0f} {r['on_us_per_item']:>7.0f} {100 * r['on_vs_off']:>+6.0f}% | "
              f"{r['story_step_us_per_item']:>8.0f} {100 * r['story_step_share']:>5.0f}% | "
              f"{r['terms_us_per_item']:>8.0f} {100 * r['workers_share']:>5.0f}% | {100 * r['writer_share']:>5.0f}%")  # fmt: skip
    print("share: the story step's time over the rest of the dedup stage's (target <= 20%); online the")
    print("terms are made in the parse workers (/sign: next to the signing there), the rest in the")
    print("writer (writer: the story step's share of the writer's dedup work there)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
