"""Every file of ../shared/feeds (1,881 feeds from other readers' test suites, listed in
its MANIFEST.tsv) through fetch -> parse -> normalise -> dedup -> store, with zero
unhandled exceptions.

The files are served by one local HTTP server and fetched by `aggregator.service.app.fetch_all`
over one config that lists them all (per_host raised so the single host does not
serialise the run), into one real SQLite file. Every file must end ingested or as a
per-feed error with a message; "internal error" / "parser crashed" outcomes and exception
tracebacks in the log count as unhandled.
"""

from __future__ import annotations

import collections
import logging
import re
import time
from pathlib import Path

import pytest
from feedserver import FeedServer, Route
from harness import record

from aggregator.config import dump_yaml, parse_config
from aggregator.service.app import fetch_all
from aggregator.store.database import Store

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "feeds"
TYPES = {
    ".json": "application/feed+json",
    ".atom": "application/atom+xml",
    ".rss": "application/rss+xml",
    ".rdf": "application/rdf+xml",
    ".xml": "application/xml",
}
UNHANDLED = ("internal error", "parser crashed")


def manifest() -> list[str]:
    lines = (SHARED / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False))["path"] for line in lines[1:] if line]


class _Exceptions(logging.Handler):
    """Log records carrying an exception: what the pipeline caught but did not expect."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


def _kind(message: str) -> str:
    """An error message without its specifics, to count errors by kind."""
    message = re.sub(r"<unknown>:\d+:\d+", "<pos>", message)
    message = re.sub(r"\d+", "N", message)
    return message[:110]


def test_every_shared_feed_file(tmp_path: Path) -> None:
    if not (SHARED / "MANIFEST.tsv").is_file():
        pytest.skip(f"../shared/feeds not present: {SHARED} has no MANIFEST.tsv")
    paths = manifest()
    missing = [p for p in paths if not (SHARED / p).is_file()]
    assert not missing, f"MANIFEST.tsv lists files that are not there: {missing[:5]}"

    caught = _Exceptions()
    logger = logging.getLogger("aggregator")
    logger.addHandler(caught)
    started = time.monotonic()
    try:
        with FeedServer() as server:
            urls = {}
            for rel in paths:
                route = "/" + rel
                body = (SHARED / rel).read_bytes()
                ctype = TYPES.get(Path(rel).suffix.lower(), "application/xml")
                server.set(route, Route(body=body, headers={"Content-Type": ctype}))
                urls[server.url(route)] = rel
            doc = {
                "settings": {"timeout": "30s", "connect_timeout": "10s", "interval": "1h",
                             "parse_workers": 2, "concurrency": 16, "per_host": 16},
                "feeds": [{"url": u, "name": rel} for u, rel in urls.items()],
            }  # fmt: skip
            cfg = tmp_path / "feeds.yaml"
            text = dump_yaml(doc)
            cfg.write_text(text, encoding="utf-8")
            config = parse_config(text, cfg)
            store = Store.open(tmp_path / "agg.db")
            try:
                report = fetch_all(config, store)
                items = store.count("items")
                clusters = store.count("clusters")
            finally:
                store.close()
    finally:
        logger.removeHandler(caught)
    elapsed = time.monotonic() - started

    by_file = {urls[o.feed.url]: o for o in report.outcomes}
    assert set(by_file) == set(paths), f"{len(set(paths) - set(by_file))} files got no outcome"
    ingested = [o for o in by_file.values() if o.status in ("new", "updated", "unchanged")]
    errors = [o for o in by_file.values() if o.status not in ("new", "updated", "unchanged")]
    kinds = collections.Counter(_kind(o.error or "(no message)") for o in errors)
    warned = sum(1 for o in ingested if o.warning)
    print(f"\nshared feeds: {len(paths)} files, {len(ingested)} ingested ({warned} with a "
          f"warning), {len(errors)} errors; {items} items in {clusters} clusters; {elapsed:.1f}s")  # fmt: skip
    for kind, n in kinds.most_common():
        print(f"  {n:5d}  {kind}")
    record("shared feeds", f"{len(paths)} files: {len(ingested)} ingested, {len(errors)} errors, "
           f"{len(caught.records)} exceptions logged, {elapsed:.0f}s")  # fmt: skip

    no_message = [urls[o.feed.url] for o in errors if not o.error]
    assert not no_message, f"errors without a message: {no_message[:10]}"
    unhandled = {urls[o.feed.url]: o.error for o in errors if o.error.startswith(UNHANDLED)}
    assert not unhandled, f"{len(unhandled)} files hit an unhandled exception: " + "; ".join(
        f"{p}: {e}" for p, e in list(unhandled.items())[:10]
    )
    assert not caught.records, f"{len(caught.records)} exceptions logged, first: " + "; ".join(
        r.getMessage() for r in caught.records[:5]
    )
    assert elapsed < 120
