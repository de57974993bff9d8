"""A local run over gva_dev: the real CLI polls the corpus's outlets week by week, and the
copy clusters and stories it forms are scored against the incident labels.

../shared/corpus/gva_dev.jsonl (real articles, 2013-2017; `cluster` = incident, `source` =
outlet, `published` = date) is served on 127.0.0.1 as one RSS/Atom feed per outlet
(dedup_quality.py's build_gva and render_feed, with StaticFeedServer's ETags). The period
is cut into rounds of ROUND_DAYS; in each round every feed shows its latest FEED_ENTRIES
entries published before the round's end (no outlet publishes more in a round, checked),
and `python -m aggregator --config C --db D fetch` polls them all once: unchanged feeds
answer 304. So the database lives through the period in time order, as a daemon polling
weekly would (the story tier only compares clusters within 72 h of each other, and only
while within the copy tier's 14 days of the newest story time: a backlog of four years
fetched at once would form almost no stories).

Then, through the CLI: `clusters list --json` and `stories list --json` (every cluster and
story), scored against the incident labels by item link: pairwise precision and recall
of copy clusters and of stories (a pair: two articles in one cluster / one story; recall
also of the same-incident pairs whose dates are within the story window, the only ones a
story can join), stories of 2+ clusters, the largest; three example stories with their
other coverage as the digest shows it; and `aggregator digest --group stories` right after
the last round, parsed with feedparser: entries, and entries with an "Other coverage" list.

Run (from the repo root):
    .venv/bin/python bench/story_run.py            # the whole corpus: 223 weekly rounds, ~9 min
    .venv/bin/python bench/story_run.py --quick    # CI smoke run: the busiest 4 weeks, ~10 s

Not deterministic: the feeds of a round answer in a different order each run, so clusters
reach the story tier in a different order (which its decisions depend on); on --quick's
~50 story pairs, precision ranged 0.74-0.98 over 7 runs.
    options: --json  --keep DIR  --round-days N
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import dedup_quality as dq  # noqa: E402
from feedserver_util import StaticFeedServer  # noqa: E402
from metrics import score  # noqa: E402

REPO = BENCH.parent
ROUND_DAYS = 7
FEED_ENTRIES = 20  # entries each feed shows, newest first
QUICK_WEEKS = 4
STORY_WINDOW = 72 * 3600  # StorySettings.window: pairs further apart no story can join
PER_HOST = 16  # every feed is on 127.0.0.1; the default 2 would serialise each round
PARSE_WORKERS = 0  # parse in the poll: a round brings ~15 items, less than starting 2 workers costs
EXAMPLES = 3
CLI_TIMEOUT = 600.0
_SUMMARY = re.compile(
    r"(?P<feeds>\d+) feeds? in [\d.]+s: (?P<new>\d+) new items?, \d+ updated, "
    r"(?P<clusters>\d+) new clusters?, (?P<not_modified>\d+) not modified, (?P<errors>\d+) errors?"
)


@dataclass(frozen=True)
class Round:
    """One poll: its end (entries published before it are served) and what it did."""

    end: datetime
    followed: int  # feeds in feeds.yaml (outlets that have published)
    changed_feeds: int
    served_new: int  # entries first served this round
    most_new_in_a_feed: int
    new_items: int  # as `aggregator fetch` counted them
    not_modified: int
    errors: int
    seconds: float


def cli(args: list[str], what: str) -> tuple[str, str]:
    """`python -m aggregator ARGS` from the repo root: (stdout, stderr); BenchError on failure."""
    cmd = [sys.executable, "-m", "aggregator", *args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise dq.BenchError(f"{what}: `{shlex.join(cmd)}` took over {CLI_TIMEOUT:.0f}s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise dq.BenchError(f"{what}: exit {proc.returncode}:\n  $ {shlex.join(cmd)}\n{tail}")
    return proc.stdout, proc.stderr


def quick_span(entries: Sequence[dq.Entry], weeks: int) -> tuple[datetime, datetime]:
    """The `weeks` consecutive weeks (Monday to Monday) that hold the most articles."""
    per_week = Counter(_monday(e.published) for e in entries)
    starts = sorted(per_week)
    best = max(
        starts, key=lambda s: (sum(per_week[s + timedelta(weeks=k)] for k in range(weeks)), s)
    )
    return best, best + timedelta(weeks=weeks)


def _monday(t: datetime) -> datetime:
    day = t.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def round_ends(first: datetime, last: datetime, days: int) -> list[datetime]:
    """Ends of the rounds that cover [first, last], each `days` long, from first's Monday."""
    ends, t = [], _monday(first)
    while t <= last:
        t += timedelta(days=days)
        ends.append(t)
    return ends


def select(quick: bool) -> tuple[list[dq.Feed], dict[str, list[dq.Entry]], int]:
    """The outlet feeds, each one's entries oldest first (a date's ties in file order), and
    the number of outlets in the corpus; with `quick`, only the busiest QUICK_WEEKS."""
    corpus, outlets = dq.build_gva(dq.load_articles(dq.CORPUS), seed=1)
    entries = list(corpus.entries)
    if quick:
        start, stop = quick_span(entries, QUICK_WEEKS)
        entries = [e for e in entries if start <= e.published < stop]
    by_feed: dict[str, list[dq.Entry]] = defaultdict(list)
    for e in sorted(entries, key=lambda e: e.published):  # stable: ties keep file order
        by_feed[e.feed].append(e)
    return [f for f in corpus.feeds if f.slug in by_feed], by_feed, outlets


def write_config(path: Path, feeds: Sequence[tuple[str, str]]) -> None:
    """dedup_quality's feeds.yaml, with the settings of this run."""
    dq.write_config(path, feeds)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"settings:\n  per_host: {PER_HOST}\n  parse_workers: {PARSE_WORKERS}\n")


def poll_rounds(
    server: StaticFeedServer,
    feeds: Sequence[dq.Feed],
    by_feed: dict[str, list[dq.Entry]],
    ends: Sequence[datetime],
    base: list[str],
) -> list[Round]:
    """For each round end: serve what each feed holds by then, and run `aggregator fetch`."""
    config = Path(base[base.index("--config") + 1])
    served = dict.fromkeys(by_feed, 0)  # entries of each feed served so far
    rounds: list[Round] = []
    for end in ends:
        changed = new = most = 0
        for f in feeds:
            items, before = by_feed[f.slug], served[f.slug]
            n = before
            while n < len(items) and items[n].published < end:
                n += 1
            if n == before:
                continue  # unchanged: same bytes, same ETag, 304 (or not a feed yet)
            changed, new, most = changed + 1, new + n - before, max(most, n - before)
            served[f.slug] = n
            window = items[max(0, n - FEED_ENTRIES) : n][::-1]
            # updated = the newest entry's date, not the clock: an unchanged feed keeps its bytes
            server.add(f"/{f.slug}.xml", *dq.render_feed(f, window, window[0].published))
        # An outlet is followed from its first article on (an empty feed is an error).
        live = [f for f in feeds if served[f.slug]]
        if changed:
            write_config(config, [(server.url(f"/{f.slug}.xml"), f.name) for f in live])
        started = time.monotonic()
        _, err = cli([*base, "fetch"], f"round ending {end:%Y-%m-%d}: fetch")
        m = _SUMMARY.search(err)
        if m is None:
            raise dq.BenchError(f"fetch printed no summary line:\n{err[-1000:]}")
        rounds.append(Round(end, len(live), changed, new, most, int(m["new"]), int(m["not_modified"]),
                            int(m["errors"]), time.monotonic() - started))  # fmt: skip
    return rounds


def run(quick: bool, round_days: int, workdir: Path) -> dict:
    """The whole run: poll round by round, read back through the CLI, score."""
    feeds, by_feed, outlets = select(quick)
    entries = [e for f in feeds for e in by_feed[f.slug]]
    first, last = min(e.published for e in entries), max(e.published for e in entries)
    for old in workdir.glob("aggregator.sqlite*"):
        old.unlink()
    base = ["--config", str(workdir / "feeds.yaml"), "--db", str(workdir / "aggregator.sqlite")]
    started = time.monotonic()
    with StaticFeedServer() as server:
        rounds = poll_rounds(server, feeds, by_feed, round_ends(first, last, round_days), base)
        poll_seconds = time.monotonic() - started
        # right after the last round: what its poll brought or touched
        since = f"{int(rounds[-1].seconds + time.monotonic() - started - poll_seconds) + 2}s"
        digest, _ = cli(
            [*base, "digest", "--group", "stories", "-o", "-", "--since", since], "digest"
        )
    most_new = max(r.most_new_in_a_feed for r in rounds)
    if most_new > FEED_ENTRIES:
        raise dq.BenchError(f"a feed gained {most_new} entries in one round, more than "
                            f"the {FEED_ENTRIES} it shows: entries were missed")  # fmt: skip

    clusters_out, _ = cli([*base, "clusters", "list", "--json", "--min-size", "1", "--limit", "0",
                           "--since", "all"], "clusters list")  # fmt: skip
    stories_out, _ = cli([*base, "stories", "list", "--json", "--min-clusters", "1", "--limit", "0",
                          "--since", "all"], "stories list")  # fmt: skip
    gold = {e.link: e.label for e in entries}
    when = {e.link: e.published for e in entries}
    source = {e.link: f.name for f in feeds for e in by_feed[f.slug]}
    cluster_of = {i["link"]: c["id"] for c in json.loads(clusters_out) for i in c["items"]}
    stories = json.loads(stories_out)
    story_of = {i["link"]: s["id"] for s in stories for c in (s["lead"], *s["others"])
                for i in c["items"]}  # fmt: skip
    copy = score({k: v for k, v in cluster_of.items() if k in gold}, gold)
    story = score({k: v for k, v in story_of.items() if k in gold}, gold)
    multi = [s for s in stories if s["clusters"] >= 2]
    largest = max(stories, key=lambda s: (s["clusters"], s["size"]), default=None)
    return {
        "quick": quick,
        "articles": len(entries),
        "outlets": len(feeds) if quick else outlets,
        "period": [first.date().isoformat(), last.date().isoformat()],
        "round_days": round_days,
        "rounds": len(rounds),
        "feed_entries": FEED_ENTRIES,
        "served": sum(r.served_new for r in rounds),
        "most_new_in_a_feed_round": most_new,
        "poll_seconds": poll_seconds,
        "round_seconds_mean": sum(r.seconds for r in rounds) / len(rounds),
        "round_seconds_max": max(r.seconds for r in rounds),
        "fetches": sum(r.followed for r in rounds),
        "fetches_not_modified": sum(r.not_modified for r in rounds),
        "fetch_errors": sum(r.errors for r in rounds),
        "new_items": sum(r.new_items for r in rounds),
        "items": len(cluster_of),
        "missing": len(gold.keys() - cluster_of.keys()),
        "unknown": len(cluster_of.keys() - gold.keys()),
        "copy_clusters": {"count": len(set(cluster_of.values())), **copy.as_dict()},
        "stories": {
            "count": len(stories),
            **story.as_dict(),
            **_in_window(story_of, gold, when),
            "of_2plus_clusters": len(multi),
            "largest_clusters": largest["clusters"] if largest else 0,
            "largest_items": largest["size"] if largest else 0,
            "largest_title": largest["title"] if largest else None,
        },
        "examples": [_example(s, gold, source) for s in _examples(multi)],
        "digest": _digest_figures(digest, since),
    }


def _in_window(story_of: dict[str, int], gold: dict[str, str], when: dict[str, datetime]) -> dict:
    """Recall over the same-incident pairs dated within the story window of each other."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for link, label in gold.items():
        by_label[label].append(link)
    near = found = 0
    for links in by_label.values():
        for a, b in itertools.combinations(links, 2):
            if abs((when[a] - when[b]).total_seconds()) <= STORY_WINDOW:
                near += 1
                found += a in story_of and story_of.get(a) == story_of.get(b)
    return {"pairs_gold_in_window": near, "pair_recall_in_window": found / near if near else 1.0}


def _examples(multi: list[dict]) -> list[dict]:
    """EXAMPLES stories of 2+ clusters, spread over the run: the most outlets in each third."""
    ordered = sorted(multi, key=lambda s: s["first_seen"])
    k = max(1, len(ordered) // EXAMPLES)
    parts = [ordered[i : i + k] for i in range(0, len(ordered), k)][:EXAMPLES]
    return [max(p, key=lambda s: (s["outlets"], s["clusters"], -s["id"])) for p in parts if p]


def _example(s: dict, gold: dict[str, str], source: dict[str, str]) -> dict:
    """A story as the digest shows it: the lead's headline and outlets, then its other
    coverage; each cluster with the incidents of its items (to judge the grouping)."""

    def view(c: dict) -> dict:
        links = [i["link"] for i in c["items"]]
        return {"title": c["title"], "outlets": sorted({source.get(u, "?") for u in links}),
                "incidents": sorted({gold.get(u, "?") for u in links})}  # fmt: skip

    return {
        "id": s["id"],
        "lead": view(s["lead"]),
        "other_coverage": [view(c) for c in s["others"]],
    }


def _digest_figures(digest: bytes | str, since: str) -> dict:
    import feedparser

    parsed = feedparser.parse(digest)
    with_other = sum(
        1 for e in parsed.entries
        if any("Other coverage" in c.get("value", "") for c in e.get("content", [])) or "Other coverage" in e.get("summary", "")
    )  # fmt: skip
    return {
        "since": since,
        "entries": len(parsed.entries),
        "with_other_coverage": with_other,
        "bozo": bool(parsed.bozo),
    }


def report(r: dict) -> str:
    c, s, d = r["copy_clusters"], r["stories"], r["digest"]
    lines = [
        f"gva_dev {'(quick) ' if r['quick'] else ''}{r['period'][0]} .. {r['period'][1]}: {r['articles']} articles, "
        f"{r['outlets']} outlet feeds, {r['rounds']} rounds of {r['round_days']} days "
        f"(each feed shows its latest {r['feed_entries']}; at most {r['most_new_in_a_feed_round']} new in a round)",
        f"polls: {r['poll_seconds']:.0f} s ({r['round_seconds_mean']:.2f} s a round, max {r['round_seconds_max']:.2f}); "
        f"{r['fetches_not_modified']} of {r['fetches']} fetches 304, {r['fetch_errors']} errors; "
        f"{r['items']} items stored, {r['missing']} missing, {r['unknown']} unknown",
        "",
        f"{'tier':<14} {'count':>6} {'pairs':>7} {'correct':>7} {'pair-P':>7} {'pair-R':>7} {'R(win)':>7}",
        f"{'copy clusters':<14} {c['count']:>6} {c['pairs_joined']:>7} {c['pairs_correct']:>7} "
        f"{c['pair_precision']:>7.3f} {c['pair_recall']:>7.3f} {'':>7}",
        f"{'stories':<14} {s['count']:>6} {s['pairs_joined']:>7} {s['pairs_correct']:>7} "
        f"{s['pair_precision']:>7.3f} {s['pair_recall']:>7.3f} {s['pair_recall_in_window']:>7.3f}",
        f"same-incident pairs: {s['pairs_gold']} ({s['pairs_gold_in_window']} dated within 72 h: R(win))",
        f"stories of 2+ clusters: {s['of_2plus_clusters']}; largest: {s['largest_clusters']} clusters, "
        f"{s['largest_items']} items ({s['largest_title']!r})",
        f"digest --group stories after the last round (--since {d['since']}): {d['entries']} entries, "
        f"{d['with_other_coverage']} with \"Other coverage\"",
        "",
        "example stories (lead, then other coverage; [incident labels]):",
    ]  # fmt: skip
    for ex in r["examples"]:
        lead = ex["lead"]
        lines.append(
            f"  story {ex['id']}: {lead['title']}  ({', '.join(lead['outlets'])})  {lead['incidents']}"
        )
        lines.append("    Other coverage:")
        for o in ex["other_coverage"]:
            lines.append(f"    - {o['title']}  ({', '.join(o['outlets'])})  {o['incidents']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"the busiest {QUICK_WEEKS} weeks only"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", type=Path, help="keep feeds.yaml and the database in DIR")
    parser.add_argument("--round-days", type=int, default=ROUND_DAYS)
    args = parser.parse_args(argv)
    if not dq.CORPUS.exists():  # as dedup_quality.py: the smoke test skips, saying why
        why = f"corpus missing: {dq.CORPUS} not found; this benchmark needs its labelled articles"
        print(json.dumps({"skipped": why}) if args.json else why)
        return 0
    try:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            result = run(args.quick, args.round_days, args.keep)
        else:
            with tempfile.TemporaryDirectory(prefix="story-run-") as tmp:
                result = run(args.quick, args.round_days, Path(tmp))
    except dq.BenchError as exc:
        sys.exit(f"story_run: {exc}")
    print(json.dumps(result, indent=1) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
