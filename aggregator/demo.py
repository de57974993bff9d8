"""`aggregator demo`: the whole pipeline on bundled sample feeds, with no network.

Six fictional outlets (`aggregator/demo_feeds/`, RSS 2.0 and Atom) carry overlapping
stories the way real feeds do: a wire story under new headlines, summaries cut off with
"… Read more", WordPress and comment-form footers, HTML and plain text, tracking
parameters. The demo serves them from 127.0.0.1 (their dates filled in relative to the
moment they are served, so they always fall inside the digest window), writes a
feeds.yaml and a database into a temporary directory (or `--dir`), runs the real daemon
for one poll (`--once`), prints the stories that more than one outlet carried and the
stories with other coverage (copy clusters that report one event in their own words), and then
runs the daemon to serve the digest and the web view until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TextIO

from .config import Config, dump_yaml, load_config, parse_http
from .errors import ConfigError
from .output import plural, print_table
from .service import app
from .service.daemon import run_daemon
from .store import queries, story_queries
from .timeutil import utcnow
from .units import parse_duration

DEFAULT_HTTP = "127.0.0.1:8080"
FEEDS_PATH = "/feeds/"
CONFIG_NAME = "feeds.yaml"


@dataclass(frozen=True)
class Outlet:
    """One bundled sample feed and how feeds.yaml names and tags it."""

    file: str
    name: str
    tags: tuple[str, ...]


OUTLETS = (
    Outlet("valley-wire.xml", "Valley Wire Service", ("wire", "regional")),
    Outlet("harbour-gazette.xml", "Harbour Gazette", ("local",)),
    Outlet("northfield-courier.atom", "Northfield Courier", ("regional",)),
    Outlet("lakeside-daily.atom", "Lakeside Daily", ("local",)),
    Outlet("meridian-post.xml", "The Meridian Post", ("national", "politics")),
    Outlet("coastline-radio.atom", "Coastline Radio News", ("local", "radio")),
)
CONTENT_TYPES = {".xml": "application/rss+xml", ".atom": "application/atom+xml"}

# {{now}} and {{ago 2h05m}} (d, h, m, s): the serve time, and that long before it
_PLACEHOLDER = re.compile(r"\{\{(now|ago ([0-9dhms]+))\}\}")


def fill_dates(template: str, now: datetime, atom: bool) -> str:
    """The feed with its date placeholders replaced: RFC 3339 for Atom, RFC 822 for RSS."""

    def date(match: re.Match[str]) -> str:
        ago = parse_duration(match.group(2)) if match.group(2) else 0.0
        when = (now - timedelta(seconds=ago)).replace(microsecond=0)
        return when.strftime("%Y-%m-%dT%H:%M:%SZ") if atom else format_datetime(when, usegmt=True)

    return _PLACEHOLDER.sub(date, template)


def feed_template(name: str) -> str:
    """The text of one bundled feed file (package data)."""
    return resources.files("aggregator").joinpath("demo_feeds", name).read_text(encoding="utf-8")


# ---------------------------------------------------------------- the sample feed server


class _FeedHandler(BaseHTTPRequestHandler):
    templates: dict[str, str]

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        name = self.path.split("?", 1)[0].removeprefix(FEEDS_PATH)
        template = self.templates.get(name) if self.path.startswith(FEEDS_PATH) else None
        if template is None:
            self.send_error(404)
            return
        suffix = Path(name).suffix
        body = fill_dates(template, utcnow(), atom=suffix == ".atom").encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", f"{CONTENT_TYPES[suffix]}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)


@contextlib.contextmanager
def serve_sample_feeds(port: int = 0) -> Iterator[str]:
    """Serve the bundled feeds on 127.0.0.1 (`port`, else any free one); yields the base
    URL of the feeds, like http://127.0.0.1:41234/feeds/."""
    templates = {o.file: feed_template(o.file) for o in OUTLETS}
    handler = type("Handler", (_FeedHandler,), {"templates": templates})
    try:
        httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="demo-feeds", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}{FEEDS_PATH}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# ---------------------------------------------------------------- set-up


def free_address(wanted: tuple[str, int]) -> tuple[str, int]:
    """`wanted` if it can be bound now, else a free port on the same host."""
    host, port = wanted
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in (port, 0):
        with socket.socket(family) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
            try:
                s.bind((host, candidate))
            except OSError:
                continue
            return host, s.getsockname()[1]
    raise ConfigError(f"cannot listen on {host}: no free port; pass --http HOST:PORT")


def _previous_feed_port(config_path: Path) -> int:
    """The port an earlier demo in the same --dir served its feeds on (0: none): reusing
    it keeps the feed URLs, so the database's feeds and items carry over."""
    try:
        found = re.search(r"http://127\.0\.0\.1:(\d+)" + FEEDS_PATH, config_path.read_text())
    except OSError:
        return 0
    return int(found.group(1)) if found else 0


def write_config(directory: Path, feeds_url: str, http: tuple[str, int]) -> Config:
    """feeds.yaml for the demo in `directory`: the sample feeds, the database and the
    digest file beside it, serving on `http`."""
    host, port = http
    settings = {
        "database": "demo.db",
        "digest_path": "digest.xml",
        "http": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "parse_workers": 0,  # six small feeds: parsing in a thread starts faster than a pool
    }
    feeds = [{"url": feeds_url + o.file, "name": o.name, "tags": list(o.tags)} for o in OUTLETS]
    path = directory / CONFIG_NAME
    text = "# written by `aggregator demo`: the bundled sample feeds, served locally\n"
    path.write_text(text + dump_yaml({"settings": settings, "feeds": feeds}), encoding="utf-8")  # fmt: skip
    return load_config(path)


# ---------------------------------------------------------------- output


def multi_source_clusters(config: Config) -> tuple[list[queries.ClusterView], int, int]:
    """Stories carried by two or more outlets (largest first), and the item and cluster
    counts of the whole database."""
    with app.open_store(config) as store:
        views = queries.list_clusters(store, None, min_size=2, limit=None)
        items, clusters = store.count("items"), store.count("clusters")
    multi = [v for v in views if v.sources >= 2]
    multi.sort(key=lambda v: (-v.sources, -v.size, v.title))
    return multi, items, clusters


def print_clusters(views: list[queries.ClusterView], out: TextIO) -> None:
    """Table: size, sources, title, outlets (in the order they reported the story)."""
    rows = [
        (v.size, v.sources, v.title, ", ".join(dict.fromkeys(m.feed for m in v.items)))
        for v in views
    ]
    print_table(("size", "sources", "title", "outlets"), rows, out, max_width=140)


def stories_with_other_coverage(config: Config) -> list[story_queries.StoryView]:
    """Stories of more than one copy cluster, most outlets first."""
    with app.open_store(config) as store:
        stories = story_queries.list_stories(store, None, min_clusters=2, limit=None)
    stories.sort(key=lambda s: (-s.outlets, -len(s.clusters), s.lead.title))
    return stories


def _outlets(cluster: queries.ClusterView) -> str:
    return ", ".join(dict.fromkeys(m.feed for m in cluster.items))


def print_stories(stories: list[story_queries.StoryView], out: TextIO) -> None:
    """Each story: its lead headline and outlets, then each other cluster's."""
    if not stories:
        print("No story has other coverage: each one is a single copy cluster.", file=out)
        return
    print(f"{plural(len(stories), 'story', 'stories')} with other coverage:", file=out)
    for story in stories:
        print(f"\n{story.lead.title}  ({_outlets(story.lead)})", file=out)
        for other in story.others:
            print(f"  other coverage: {other.title}  ({_outlets(other)})", file=out)


# ---------------------------------------------------------------- the demo


def run_demo(directory: Path | None, http: str = DEFAULT_HTTP, serve: bool = True,
             out: TextIO = sys.stdout) -> int:  # fmt: skip
    """Fetch, cluster and print the sample feeds; then serve the digest until Ctrl-C."""
    try:
        wanted = parse_http(http)
    except ValueError as exc:
        raise ConfigError(f"--http: {exc}") from None
    if wanted is None:
        raise ConfigError("--http: the demo needs an address to serve on; use --no-serve instead")
    # the sample feeds are on 127.0.0.1: never send those requests to a proxy
    no_proxy = os.environ.get("NO_PROXY", "")
    os.environ["NO_PROXY"] = ",".join(filter(None, [no_proxy, "127.0.0.1", "localhost"]))
    with contextlib.ExitStack() as stack:
        if directory is None:
            temp = stack.enter_context(tempfile.TemporaryDirectory(prefix="aggregator-demo-"))
            directory, kept = Path(temp), False
        else:
            directory.mkdir(parents=True, exist_ok=True)
            kept = True
        feeds_url = stack.enter_context(
            serve_sample_feeds(_previous_feed_port(directory / CONFIG_NAME))
        )
        address = free_address(wanted) if serve else wanted
        config = write_config(directory, feeds_url, address)
        print(f"Serving {len(OUTLETS)} sample feeds at {feeds_url}; fetching them once…", file=out)
        run_daemon(config, None, once=True)

        views, items, clusters = multi_source_clusters(config)
        print(f"\n{plural(items, 'item')} from {plural(len(OUTLETS), 'feed')} became {plural(clusters, 'story', 'stories')}; "
              f"{len(views)} were carried by more than one outlet:\n", file=out)  # fmt: skip
        print_clusters(views, out)
        print(file=out)
        print_stories(stories_with_other_coverage(config), out)
        where = "kept" if kept else "deleted on exit; --dir DIR keeps them"
        print(f"\nconfig {directory / CONFIG_NAME}, database {directory / 'demo.db'} ({where})",
              file=out)  # fmt: skip
        if not serve:
            return 0

        host, port = address
        base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        if address != wanted:
            print(f"{wanted[0]}:{wanted[1]} is in use; serving on port {port} instead", file=out)
        print(f"\ndigest at {base}/digest.atom, web view at {base}/", file=out)
        print("Ctrl-C stops the demo.", file=out, flush=True)
        code = run_daemon(config, None, once=False)
        print("demo stopped", file=out)
        return code
