"""`aggregator` command line. Thin: parse arguments, call the pipeline, print."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

# Only what every command needs is imported here; the fetching, clustering and OPML stacks
# (numpy, httpx, feedparser, ruamel.yaml: ~250 ms) load inside the commands that use them,
# so `clusters list`, `search` or `stats` start in a fraction of the time.
from . import __version__
from .config import CONFIG_ENV, DB_ENV, Config, load_config
from .errors import AggregatorError, NotFound
from .logs import configure as configure_logging
from .output import Progress, is_terminal, plural, print_json, print_table, safe, use_color
from .store import queries
from .store.database import open_store
from .timeutil import from_iso, relative, utcnow
from .units import parse_duration

EPILOG = {
    "fetch": "example:\n  aggregator fetch\n  aggregator fetch --feed 'Example News'\n"
             "  aggregator --config my.yaml --db /tmp/a.db fetch",
    "feeds list": "example:\n  aggregator feeds list --json | jq '.[] | select(.status==\"error\")'",
    "feeds import": "example:\n  aggregator feeds import subscriptions.opml",
    "feeds add": "example:\n  aggregator feeds add https://example.org/   # finds the feed the page links to\n"
                 "  aggregator feeds add https://example.org/rss.xml --name Example --tags Tech/Apple,news",
    "feeds remove": "example:\n  aggregator feeds remove 'Example News'\n  aggregator feeds remove https://example.org/rss.xml",
    "feeds export": "example:\n  aggregator feeds export > subscriptions.opml",
    "clusters list": "example:\n  aggregator clusters list --since 24h --min-size 3\n"
                     "  aggregator clusters list --tag world --feed 'BBC World' --query 'rail strike'",
    "clusters show": "example:\n  aggregator clusters show 42 --json\n"
                     "  aggregator clusters show 42 --query harbour  # fails unless a member matches",
    "stories list": "example:\n  aggregator stories list --since 48h\n"
                    "  aggregator stories list --min-clusters 1 --tag world --json | jq '.[0].others'",
    "stories show": "example:\n  aggregator stories show 42\n  aggregator stories show 42 --json | jq '.lead.items'",
    "stories": "example:\n  aggregator stories list\n  aggregator stories show 42",
    "run": "example:\n  aggregator run --once\n  python scheduler.py --config feeds.yaml --log-level DEBUG",
    "digest": "example:\n  aggregator digest --format rss -o digest.rss\n  aggregator digest --format json -o - --min-size 3\n"
              "  aggregator digest --group clusters -o -   # one entry per copy cluster",
    "recluster": "example:\n  aggregator recluster --threshold 0.6",
    # everyday use: search, stats, and the command groups themselves
    "feeds": "example:\n  aggregator feeds list\n  aggregator feeds add https://example.org/\n"
             "  aggregator feeds import subscriptions.opml",
    "clusters": "example:\n  aggregator clusters list --min-size 3\n  aggregator clusters show 42",
    "search": "example:\n  aggregator search \"don't\" --since 30d\n"
              "  aggregator search '\"rail strike\" NOT freight' --json | jq '.[0].matches'",
    "stats": "example:\n  aggregator stats\n  aggregator stats --json | jq '.per_feed[:5]'",
}


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


ALL_TIME = float("inf")


def _since(text: str) -> float:
    """A --since period: a duration, or `all` (no limit)."""
    return ALL_TIME if text.strip().lower() == "all" else _duration(text)


def _since_time(seconds: float) -> datetime | None:
    """The start of a --since period (None for `all`)."""
    return None if seconds == ALL_TIME else utcnow() - timedelta(seconds=seconds)


def _tags(text: str) -> list[str]:
    """--tags a,b: comma-separated (repeatable); blanks dropped."""
    return [tag for tag in (t.strip() for t in text.split(",")) if tag]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number between 0 and 1")
    return value


def _add_cluster_filters(c: argparse.ArgumentParser, which: str = "clusters with") -> None:
    """--tag/--feed/--query: keep clusters (`which`: or stories whose lead has) a member
    from such a feed / matching."""
    c.add_argument("--tag", action="append", default=[],
                   help=f"only {which} a member from a feed with this tag (repeatable: any)")
    c.add_argument("--feed", metavar="NAME_OR_URL",
                   help=f"only {which} a member from this feed (name, title or URL)")
    c.add_argument("--query", metavar="TEXT",
                   help=f"only {which} a member matching this search (as `aggregator search`)")  # fmt: skip


LEAD_HAS = "stories whose lead cluster has"


def _cluster_filter(args) -> queries.ClusterFilter:
    return queries.ClusterFilter(tuple(args.tag), args.feed, args.query)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aggregator",
        description="Feed aggregator and near-duplicate story deduplicator.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  aggregator fetch && aggregator clusters list --min-size 2",
    )
    p.add_argument("--version", action="version", version=f"aggregator {__version__}")
    p.add_argument("--config", metavar="PATH", help=f"feeds.yaml to use (env {CONFIG_ENV}; default ./feeds.yaml)")
    p.add_argument("--db", metavar="PATH", help=f"database file (env {DB_ENV}; default settings.database)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(parent, name, help, key=None):
        return parent.add_parser(
            name, help=help, description=help, epilog=EPILOG.get(key or name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip

    c = command(sub, "fetch", "Fetch every active feed once, store and cluster new items, exit.")
    c.add_argument("--feed", metavar="NAME_OR_URL",
                   help="only this feed (name, own title or URL), even if it is dead")
    c.set_defaults(handler=cmd_fetch)  # fmt: skip

    feeds = command(sub, "feeds", "List, add, remove, import and export followed feeds.")
    fsub = feeds.add_subparsers(dest="feeds_command", metavar="SUBCOMMAND", required=True)
    c = command(fsub, "list", "Each feed's status, last fetch, last error and item count.", "feeds list")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(handler=cmd_feeds_list)
    c = command(fsub, "import", "Add the feeds of an OPML file to feeds.yaml.", "feeds import")
    c.add_argument("file", type=Path, help="OPML file exported from another reader")
    c.set_defaults(handler=cmd_feeds_import, creates_config=True)
    c = command(fsub, "export", "Print the followed feeds as OPML 2.0.", "feeds export")
    c.set_defaults(handler=cmd_feeds_export)
    c = command(fsub, "add", "Check that a URL answers with a feed (or find the feed its web page "
                             "links to) and add it to feeds.yaml.", "feeds add")
    c.add_argument("url", help="the feed, or a site's page that links its feed")
    c.add_argument("--name", help="name to show (default: the feed's own title)")
    c.add_argument("--tags", type=_tags, action="extend", default=[], metavar="TAG,TAG",
                   help="comma-separated tags; a tag Tech/Apple is the folder Apple inside Tech")
    c.add_argument("--interval", type=_duration, help="poll interval (default settings.interval), e.g. 15m")
    c.set_defaults(handler=cmd_feeds_add, creates_config=True)
    c = command(fsub, "remove", "Stop following a feed: remove it from feeds.yaml (its stored "
                                "items stay).", "feeds remove")
    c.add_argument("feed", metavar="NAME_OR_URL", help="the feed's URL, name or own title")
    c.set_defaults(handler=cmd_feeds_remove)  # fmt: skip

    clusters = command(sub, "clusters", "Story clusters: copies of one story from many feeds.")
    csub = clusters.add_subparsers(dest="clusters_command", metavar="SUBCOMMAND", required=True)
    c = command(csub, "list", "Clusters, newest first.", "clusters list")
    c.add_argument("--since", type=_since, default=_duration("24h"),
                   help="only clusters active in this period (default 24h; `all`: any time)")
    c.add_argument("--min-size", type=int, default=2, help="at least this many items (default 2)")
    c.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0: all)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    _add_cluster_filters(c)
    c.set_defaults(handler=cmd_clusters_list)  # fmt: skip
    c = command(csub, "show", "Every member of one cluster.", "clusters show")
    c.add_argument("id", type=int)
    c.add_argument("--json", action="store_true", help="machine-readable output")
    _add_cluster_filters(c)
    c.set_defaults(handler=cmd_clusters_show)

    stories = command(sub, "stories", "Stories: copy clusters that report one event in their own words.")
    ssub = stories.add_subparsers(dest="stories_command", metavar="SUBCOMMAND", required=True)
    c = command(ssub, "list", "Stories, newest first: the lead cluster (most outlets) and how "
                              "many others.", "stories list")
    c.add_argument("--since", type=_since, default=_duration("24h"),
                   help="only stories with a cluster active in this period (default 24h; `all`: any time)")
    c.add_argument("--min-clusters", type=int, default=2,
                   help="at least this many copy clusters (default 2: stories with other coverage)")
    c.add_argument("--min-size", type=int, default=1, help="a lead cluster of at least this many items")
    c.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0: all)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    _add_cluster_filters(c, LEAD_HAS)
    c.set_defaults(handler=cmd_stories_list)
    c = command(ssub, "show", "Every cluster of one story, the lead first.", "stories show")
    c.add_argument("id", type=int, help="the story's id (its first cluster's)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    _add_cluster_filters(c, LEAD_HAS)
    c.set_defaults(handler=cmd_stories_show)  # fmt: skip

    c = command(sub, "run", "Run the daemon: poll feeds on their schedule until stopped.")
    c.add_argument("--config", dest="run_config", metavar="PATH", help="feeds.yaml (same as the global option)")
    c.add_argument("--db", dest="run_db", metavar="PATH", help="database file (same as the global option)")
    c.add_argument("--once", action="store_true", help="one poll of every due or new feed, then exit")
    c.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    c.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="json: one JSON object per line, for log collectors")
    c.set_defaults(handler=cmd_run)

    c = command(sub, "digest", "Write the digest feed (one entry per story) now.")
    c.add_argument("--format", choices=["atom", "rss", "json"],
                   help="default settings.digest.format (atom)")
    c.add_argument("-o", "--output", type=Path,
                   help="file to write atomically; - for stdout (default settings.digest_path)")
    c.add_argument("--min-size", type=int, help="only stories carried at least this many times")
    c.add_argument("--tag", action="append", help="only stories from feeds with this tag (repeatable)")
    c.add_argument("--since", type=_since, help="window (default settings.digest.window, 48h; `all`: any time)")
    c.add_argument("--group", choices=["stories", "clusters"],
                   help="one entry per story, with its other coverage, or per copy cluster "
                        "(default settings.digest.group, stories)")
    c.set_defaults(handler=cmd_digest)  # fmt: skip

    c = command(sub, "recluster", "Rebuild all clusters from stored items.")
    c.add_argument("--threshold", type=_fraction, help="Jaccard threshold (default settings.dedup.threshold)")
    c.set_defaults(handler=cmd_recluster)

    # everyday use: full-text search and database statistics
    c = command(sub, "search", "Full-text search of stored items, grouped by story, best match first.")
    c.add_argument("query", help="words (all must occur), or FTS5 syntax: \"a phrase\", bridg*, "
                                 "title:strike, flood NOT river")
    c.add_argument("--since", type=_since, default=ALL_TIME,
                   help="only items published in this period (default: everything stored; e.g. 7d)")
    c.add_argument("--limit", type=int, default=20, help="at most this many stories (default 20; 0: all)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(handler=cmd_search)
    c = command(sub, "stats", "Feeds, items, stories, duplicates removed, database size, "
                              "and which feeds mostly republish others.")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(handler=cmd_stats)  # fmt: skip
    _add_demo(sub, command)
    return p


# ---------------------------------------------------------------- commands


def cmd_run(args, config: Config) -> int:
    from .service.daemon import run_daemon

    configure_logging(args.log_level, args.log_format)
    return run_daemon(config, args.run_db or args.db, args.once)


def cmd_fetch(args, config: Config) -> int:
    from .service import app

    with open_store(config, args.db, create_folder=True) as store:
        progress: Progress | None = None

        def start(total: int) -> None:
            nonlocal progress
            progress = Progress(total, "fetching").keep_clear_of_logs()

        report = app.fetch_all(config, store, start, lambda _: progress and progress.advance(), args.feed)
        if progress:
            progress.close()
        rows = [
            (o.status, o.new, o.updated, o.unchanged, o.feed.display_name,
             o.error or o.warning or (f"moved permanently to {o.moved_to}" if o.moved_to else ""))
            for o in sorted(report.outcomes, key=lambda o: o.feed.id)
        ]  # fmt: skip
        print_table(("status", "new", "updated", "unchanged", "feed", "message"), rows)
        print(
            f"{plural(len(report.outcomes), 'feed')} in {report.duration:.1f}s: "
            f"{plural(report.new_items, 'new item')}, {report.updated_items} updated, "
            f"{plural(report.new_clusters, 'new cluster')}, {report.count('not_modified')} not modified, "
            f"{plural(report.errors, 'error')}",
            file=sys.stderr,
        )
    return 0


def cmd_feeds_list(args, config: Config) -> int:
    with open_store(config, args.db) as store:
        store.sync_feeds(config, utcnow())
        rows = store.feed_summaries()
    if args.json:
        print_json([queries.feed_json(r) for r in rows])
        return 0
    now = utcnow()
    terminal = is_terminal()
    print_table(
        ("id", "status", "items", "last fetch", "feed", "last error"),
        [
            (r["id"], r["status"] if r["active"] else "inactive", r["items"],
             relative(from_iso(r["last_fetch_at"]), now) if terminal else r["last_fetch_at"] or "",
             r["name"] or r["title"] or r["url"], r["last_error"] or "")
            for r in rows
        ],
    )  # fmt: skip
    return 0


def cmd_feeds_import(args, config: Config) -> int:
    from . import feeds_file
    from .ingest import opml

    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise AggregatorError(f"{args.file}: cannot read: {exc.strerror}") from None
    parsed = opml.parse_opml_import(data, str(args.file))
    added, skipped = feeds_file.add_feeds(config.path, parsed.feeds)
    for feed in added:
        print(f"added\t{safe(feed.url)}\t{safe(feed.name or '')}")
    for feed in skipped:
        print(f"already followed\t{safe(feed.url)}")
    for bad in parsed.rejected:
        print(f"skipped\t{safe(bad.url)}\t{safe(bad.problem)}")
    print(f"{len(added)} added to {config.path}, {len(skipped)} already there, "
          f"{len(parsed.rejected)} skipped", file=sys.stderr)  # fmt: skip
    return 0


def cmd_feeds_export(args, config: Config) -> int:
    from .ingest import opml

    sys.stdout.write(opml.render_opml(config.feeds, _feed_sites(config, args.db)))
    return 0


def cmd_feeds_add(args, config: Config) -> int:
    from .service import app

    feed, found = app.add_feed(config, args.url, args.name, args.tags, args.interval)
    print(f"added\t{safe(feed.url)}\t{safe(feed.name or found.title or '')}")
    if found.page:
        print(f"found through the page {safe(found.page)}", file=sys.stderr)
    for other in found.others:
        print(f"the page also offers\t{safe(other.url)}\t{safe(other.title or '')}", file=sys.stderr)
    print(f"{config.path}: now following {safe(found.title or feed.url)} ({found.format or 'feed'}, "
          f"{plural(found.entries, 'entry', 'entries')} now); a running daemon picks it up at its next "
          "check (settings.check_every)", file=sys.stderr)  # fmt: skip
    return 0


def cmd_feeds_remove(args, config: Config) -> int:
    from . import feeds_file

    titles = {url: site.title for url, site in _feed_sites(config, args.db).items()}
    feed = feeds_file.remove_feed(config.path, args.feed, titles)
    print(f"removed\t{safe(feed.url)}\t{safe(feed.name or titles.get(feed.url) or '')}")
    print(f"{config.path}: no longer following {safe(feed.url)}; its stored items stay in the database",
          file=sys.stderr)  # fmt: skip
    return 0


def _feed_sites(config: Config, db: str | None) -> dict:
    """What the database knows of each feed (its own title and site), or nothing when
    there is no database yet; an unreadable one is reported, not fatal: these commands
    work from feeds.yaml."""
    from .config import database_path
    from .errors import StoreError

    target = database_path(config, db)
    if isinstance(target, Path) and not target.is_file():
        return {}
    try:
        with open_store(config, db) as store:
            return store.feed_sites()
    except StoreError as exc:
        print(f"aggregator: {safe(exc)} (going on with feeds.yaml alone)", file=sys.stderr)
        return {}


def _print_clusters(views, as_json: bool) -> None:
    if as_json:
        print_json([v.to_json() for v in views])
        return
    now = utcnow()
    terminal = is_terminal()
    print_table(
        ("id", "size", "feeds", "first seen", "title"),
        [(v.id, v.size, v.feeds,
          relative(v.first_seen, now) if terminal else v.to_json()["first_seen"], v.title)
         for v in views],
    )  # fmt: skip


def cmd_clusters_list(args, config: Config) -> int:
    from .units import format_duration

    with open_store(config, args.db) as store:
        since, where = _since_time(args.since), _cluster_filter(args)
        views = queries.list_clusters(store, since, args.min_size, args.limit or None, where)
        hidden = queries.count_clusters(store, args.min_size, before=since) if since and not where else 0
    _print_clusters(views, args.json)
    if hidden:  # an empty answer should say why
        print(f"{plural(hidden, 'older cluster')} of {args.min_size}+ items not shown: last active more than "
              f"{format_duration(args.since)} ago; `--since all` (or e.g. `--since 30d`) shows them",
              file=sys.stderr)  # fmt: skip
    return 0


def cmd_clusters_show(args, config: Config) -> int:
    with open_store(config, args.db) as store:
        where = _cluster_filter(args)
        view = queries.get_cluster(store, args.id, where)
        if view is None and where and queries.get_cluster(store, args.id) is not None:
            raise NotFound(f"cluster {args.id} has no member matching {where.describe()}")
    if view is None:
        raise NotFound(f"no cluster {args.id}; list them with `aggregator clusters list`")
    if args.json:
        print_json(view.to_json())
        return 0
    now, terminal = utcnow(), is_terminal()
    first_seen = relative(view.first_seen, now) if terminal else view.to_json()["first_seen"]
    print(f"cluster {view.id}: {safe(view.title)}")
    print(f"{plural(view.size, 'item')} from {plural(view.feeds, 'feed')}, first seen {first_seen}")
    print_table(
        ("id", "feed", "published", "similarity", "title", "url"),
        [(m.id, m.feed, relative(m.published, now) if terminal else m.published.strftime("%Y-%m-%dT%H:%M:%SZ"),
          "" if m.similarity is None else f"{m.similarity:.2f}", m.title, m.url or "")
         for m in view.items],
    )  # fmt: skip
    return 0


def cmd_stories_list(args, config: Config) -> int:
    from .store.story_queries import count_stories, list_stories
    from .units import format_duration

    with open_store(config, args.db) as store:
        since, where = _since_time(args.since), _cluster_filter(args)
        views = list_stories(store, since, args.min_clusters, args.limit or None, where, args.min_size)
        plain = since and not where and args.min_size <= 1
        hidden = count_stories(store, args.min_clusters, before=since) if plain else 0
    if args.json:
        print_json([v.to_json() for v in views])
    else:
        now, terminal = utcnow(), is_terminal()
        print_table(
            ("id", "clusters", "outlets", "size", "first seen", "title"),
            [(v.id, len(v.clusters), v.outlets, v.size,
              relative(v.first_seen, now) if terminal else v.to_json()["first_seen"], v.lead.title)
             for v in views],
        )  # fmt: skip
    if hidden:  # an empty answer should say why
        print(f"{plural(hidden, 'older story', 'older stories')} of {args.min_clusters}+ clusters not shown: "
              f"last active more than {format_duration(args.since)} ago; `--since all` (or e.g. "
              "`--since 30d`) shows them", file=sys.stderr)  # fmt: skip
    return 0


def cmd_stories_show(args, config: Config) -> int:
    from .store.story_queries import get_story, story_of

    with open_store(config, args.db) as store:
        where = _cluster_filter(args)
        view = get_story(store, args.id, where)
        if view is None and where and get_story(store, args.id) is not None:
            raise NotFound(f"story {args.id}: its lead cluster has no member matching {where.describe()}")
        home = story_of(store, args.id) if view is None else None
    if view is None and home is not None:
        raise NotFound(f"no story {args.id}: cluster {args.id} is in story {home}; "
                       f"`aggregator stories show {home}`")  # fmt: skip
    if view is None:
        raise NotFound(f"no story {args.id}; list them with `aggregator stories list`")
    if args.json:
        print_json(view.to_json())
        return 0
    now, terminal = utcnow(), is_terminal()
    first_seen = relative(view.first_seen, now) if terminal else view.to_json()["first_seen"]
    print(f"story {view.id}: {safe(view.lead.title)}")
    print(f"{plural(view.size, 'item')} in {plural(len(view.clusters), 'cluster')} from "
          f"{plural(view.outlets, 'outlet')}, first seen {first_seen}")  # fmt: skip
    print_table(
        ("cluster", "role", "size", "feeds", "match", "outlets", "title", "url"),
        [(c.id, "lead" if k == 0 else "other", c.size, c.feeds, "" if s is None else f"{s:.2f}",
          ", ".join(dict.fromkeys(m.feed for m in c.items)), c.title, c.url or "")
         for k, (c, s) in enumerate(zip(view.clusters, view.scores, strict=True))],
    )  # fmt: skip
    return 0


def cmd_digest(args, config: Config) -> int:
    from dataclasses import replace

    from .config import relative_to_config
    from .files import write_atomically
    from .publish.publisher import build_digest

    settings = config.settings.digest
    changes = {k: v for k, v in (("min_size", args.min_size), ("window", args.since),
                                 ("tags", tuple(args.tag) if args.tag else None),
                                 ("group", args.group)) if v is not None}  # fmt: skip
    settings = replace(settings, **changes)
    fmt = args.format or settings.format
    with open_store(config, args.db) as store:
        rendered = build_digest(store, settings, utcnow(), formats=(fmt,))[fmt]
    if str(args.output) == "-":
        sys.stdout.buffer.write(rendered.body)
        return 0
    target = args.output or relative_to_config(config, config.settings.digest_path)
    try:
        write_atomically(target, rendered.body)
    except OSError as exc:
        raise AggregatorError(f"{target}: cannot write the digest: {exc.strerror}") from None
    print(f"wrote {fmt} digest to {target} ({len(rendered.body):,} bytes)", file=sys.stderr)
    return 0


def cmd_recluster(args, config: Config) -> int:
    from dataclasses import replace

    from .service.clustering import Clusterer

    dedup = config.settings.dedup
    if args.threshold is not None:
        dedup = replace(dedup, threshold=args.threshold)
    with open_store(config, args.db) as store:
        progress = Progress(1, "reclustering")

        def step(done: int, total: int) -> None:
            progress.total = max(total, 1)
            progress.advance(done - progress.done)

        count = Clusterer(dedup, config.settings.stories).recluster(store, step)
        progress.close()
        items = store.count("items")
    print(f"{items} items in {count} clusters")
    return 0


# ---------------------------------------------------------------- everyday use: search, stats

SEARCH_MATCHES_SHOWN = 3  # per story on a terminal; TSV and JSON list them all


def cmd_search(args, config: Config) -> int:
    from .output import highlight
    from .store.search import plain, search
    from .units import format_duration

    with open_store(config, args.db) as store:
        hits = search(store, args.query, _since_time(args.since), args.limit or None)
    if args.json:
        print_json([h.to_json() for h in hits])
        return 0
    if not is_terminal():
        print_table(
            ("cluster", "size", "feeds", "item", "feed", "published", "score", "title", "snippet"),
            [(h.id, h.size, h.feeds, m.id, m.feed, m.published.strftime("%Y-%m-%dT%H:%M:%SZ"),
              m.score, m.title, plain(m.snippet))
             for h in hits for m in h.matches],
        )  # fmt: skip
        return 0
    if not hits:
        period = "" if args.since == ALL_TIME else f" in the last {format_duration(args.since)}"
        print(f"no matches for {safe(args.query)!r}{period}", file=sys.stderr)
        return 0
    now, color = utcnow(), use_color()
    for h in hits:
        print(f"cluster {h.id} · {plural(h.size, 'item')} from {plural(h.feeds, 'feed')} · "
              f"last seen {relative(h.last_seen, now)}")  # fmt: skip
        for m in h.matches[:SEARCH_MATCHES_SHOWN]:
            print(f"  {highlight(m.title_marked, color)}  ({safe(m.feed)}, {relative(m.published, now)})")
            if m.snippet:
                print(f"    {highlight(m.snippet, color)}")
        if len(h.matches) > SEARCH_MATCHES_SHOWN:
            print(f"  … {len(h.matches) - SEARCH_MATCHES_SHOWN} more matching items: "
                  f"aggregator clusters show {h.id}")  # fmt: skip
        print()
    return 0


def cmd_stats(args, config: Config) -> int:
    from .store.stats import compute
    from .units import format_size

    with open_store(config, args.db) as store:
        stats = compute(store, utcnow())
    data = stats.to_json()
    if args.json:
        print_json(data)
        return 0
    terminal = is_terminal()
    now = utcnow()
    f, d, db = data["feeds"], data["duplicates"], data["database"]

    def size(n: int) -> str | int:
        return format_size(n) if terminal else n

    def heading(text: str) -> None:
        print(f"\n{text}" if terminal else "")

    print_table(
        ("metric", "value"),
        [("feeds", f["total"]), *((f"feeds {k}", f[k]) for k in ("ok", "failing", "dead", "new", "inactive")),
         ("items", data["items"]), ("clusters", data["clusters"]),
         ("duplicates removed today", d["today"]), ("duplicates removed 7d", d["7d"]),
         ("duplicates removed all", d["all"]), ("database size", size(db["bytes"])),
         # an SQLite file and its WAL; PostgreSQL has no WAL of one database to show
         *(() if db["wal_bytes"] is None else
           (("database file", size(db["db_bytes"])), ("database wal", size(db["wal_bytes"]))))],
    )  # fmt: skip
    heading("Largest stories of the last 24 h")
    print_table(
        ("id", "size", "feeds", "last seen", "title"),
        [(c.id, c.size, c.feeds,
          relative(c.last_seen, now) if terminal else data_c["last_seen"], c.title)
         for c, data_c in zip(stats.largest, data["largest_clusters_24h"], strict=True)],
    )  # fmt: skip
    heading("Per feed: share of its items that repeat a story another feed reported first")
    print_table(
        ("id", "feed", "state", "items", "republished", "share"),
        [(s.id, s.name, s.state, s.items, s.republished,
          "" if s.republished_share is None
          else f"{s.republished_share:.0%}" if terminal else s.republished_share)
         for s in stats.per_feed],
    )  # fmt: skip
    return 0


# ---------------------------------------------------------------- demo (no feeds.yaml needed)

EPILOG["demo"] = ("example:\n  aggregator demo                 # then open http://127.0.0.1:8080/\n"
                  "  aggregator demo --no-serve --dir /tmp/agg-demo")  # fmt: skip


def _add_demo(sub, command) -> None:
    c = command(sub, "demo", "Try it offline: fetch bundled sample feeds from a local server, "
                             "print the stories they share, serve the digest and web view.")
    c.add_argument("--dir", type=Path, help="keep feeds.yaml and the database here "
                                            "(default: a temporary directory, deleted on exit)")
    c.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="where to serve the digest and web view (default 127.0.0.1:8080; "
                        "a free port if it is taken)")
    c.add_argument("--no-serve", action="store_true", help="print the stories and exit")
    c.set_defaults(handler=cmd_demo, needs_config=False)  # fmt: skip


def cmd_demo(args, config: None) -> int:
    from .demo import run_demo

    return run_demo(args.dir, args.http, serve=not args.no_serve)


def _config_or_new(path: str | None) -> Config:
    """`feeds add` and `feeds import` on a first run: no feeds.yaml yet is an empty one,
    written when the first feed is added."""
    from .config import DEFAULT_CONFIG_PATH, parse_config

    chosen = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    return load_config(chosen) if chosen.exists() else parse_config("", chosen)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain `aggregator`: what it can do
        parser.print_help(sys.stderr)
        return 2
    try:
        if getattr(args, "creates_config", False):
            config = _config_or_new(args.config)
        elif getattr(args, "needs_config", True):
            config = load_config(getattr(args, "run_config", None) or args.config)
        else:
            config = None  # `demo` writes its own feeds.yaml
        return args.handler(args, config)
    except NotFound as exc:  # the command ran; what was asked for is not there
        print(f"aggregator: {safe(exc)}", file=sys.stderr)
        return 1
    except AggregatorError as exc:
        print(f"aggregator: {safe(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `aggregator feeds list | head -1`: the reader left, as with cat
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
