"""The command line as a demanding user meets it: pipes that close early, NO_COLOR, exit
codes, plurals, help, empty answers that say why, dates past a week (the real CLI as a
subprocess, a pseudo-terminal where the terminal is the point)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from feedserver import FeedServer, Route

from aggregator.config import dump_yaml
from aggregator.timeutil import relative

REPO = Path(__file__).resolve().parent.parent


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_") and k not in ("NO_COLOR",)}
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return {**e, **extra}


def cli(tmp_path: Path, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aggregator", "--config", str(tmp_path / "feeds.yaml"),
                           "--db", str(tmp_path / "agg.db"), *args],
                          capture_output=True, text=True, env=env(), timeout=120, **kw)  # fmt: skip


def in_terminal(tmp_path: Path, *args: str, **extra_env: str) -> str:
    """The CLI's output on a pseudo-terminal (so it believes a person is reading)."""
    argv = [sys.executable, "-m", "aggregator", "--config", str(tmp_path / "feeds.yaml"),
            "--db", str(tmp_path / "agg.db"), *args]  # fmt: skip
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env(**extra_env))
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(leader)
    return out.decode("utf-8", "replace")


def rss(items: list[tuple[str, str, datetime]]) -> bytes:
    from email.utils import format_datetime

    body = "".join(f"<item><guid>{g}</guid><title>{t}</title><link>https://e.example/{g}</link>"
                   f"<pubDate>{format_datetime(d, usegmt=True)}</pubDate>"
                   f"<description>The harbour report {g} says the harbour is calm today.</description></item>"
                   for g, t, d in items)  # fmt: skip
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Old News</title>{body}</channel></rss>'.encode()


@pytest.fixture
def old_feed(tmp_path: Path, feed_server: FeedServer) -> Path:
    """One feed of two 2017 posts, fetched into tmp_path/agg.db."""
    old = datetime(2017, 6, 23, 10, tzinfo=UTC)
    feed_server.set("/old.xml", Route(body=rss([("a1", "Harbour calm", old), ("a2", "Harbour calm again", old + timedelta(hours=1))])))
    (tmp_path / "feeds.yaml").write_text(dump_yaml({"feeds": [feed_server.url("/old.xml")]}))
    run = cli(tmp_path, "fetch")
    assert run.returncode == 0, run.stderr
    assert "1 feed in" in run.stderr and "2 new items" in run.stderr and "0 errors" in run.stderr
    return tmp_path


def test_a_pipe_that_closes_early_is_no_error(tmp_path: Path) -> None:
    feeds = [f"https://feed{i}.example/rss" for i in range(3000)]
    (tmp_path / "feeds.yaml").write_text(dump_yaml({"feeds": feeds}))
    shell = (f"{sys.executable} -m aggregator --config {tmp_path / 'feeds.yaml'} --db {tmp_path / 'agg.db'} "
             "feeds list | head -1")  # fmt: skip
    run = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, env=env(), timeout=120)
    assert run.stdout.count("\n") == 1
    assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr, run.stderr


def test_exit_codes_help_and_plain_aggregator(tmp_path: Path, old_feed: Path) -> None:
    missing = cli(tmp_path, "clusters", "show", "999999")
    assert missing.returncode == 1 and "no cluster 999999" in missing.stderr  # not found: 1
    bad = cli(tmp_path, "clusters", "list", "--since", "soon")
    assert bad.returncode == 2  # a usage error: 2
    plain = subprocess.run([sys.executable, "-m", "aggregator"], capture_output=True, text=True, env=env())
    assert plain.returncode == 2
    for command in ("fetch", "run", "clusters", "search", "digest", "stats"):
        assert command in plain.stderr
    run_help = cli(tmp_path, "run", "--help")
    assert "RUN_CONFIG" not in run_help.stdout and "RUN_DB" not in run_help.stdout and "--config PATH" in run_help.stdout


def test_empty_answers_say_why_and_since_all_works_everywhere(old_feed: Path) -> None:
    tmp_path = old_feed
    found = cli(tmp_path, "search", "harbour")  # everything stored, as reader and Miniflux search
    assert found.returncode == 0 and "Harbour calm" in found.stdout, found.stderr
    listed = cli(tmp_path, "clusters", "list", "--min-size", "1")
    assert listed.stdout.strip().count("\n") == 0  # header only: 2017 is outside 24h
    assert "2 older clusters of 1+ items not shown" in listed.stderr and "--since all" in listed.stderr
    everything = cli(tmp_path, "clusters", "list", "--min-size", "1", "--since", "all")
    assert "Harbour calm" in everything.stdout and "not shown" not in everything.stderr
    narrowed = cli(tmp_path, "search", "harbour", "--since", "7d")
    assert "Harbour calm" not in narrowed.stdout
    digest = cli(tmp_path, "digest", "--since", "all", "-o", "-")
    assert digest.returncode == 0 and b"Harbour calm" in digest.stdout.encode()
    scores = cli(tmp_path, "search", "harbour", "--json")
    import json

    assert all(m["score"] != 0 for hit in json.loads(scores.stdout) for m in hit["matches"])


def test_terminal_output_honours_no_color_and_dates_past_a_week(old_feed: Path) -> None:
    tmp_path = old_feed
    bold = in_terminal(tmp_path, "search", "harbour")
    assert "\x1b[1m" in bold  # a terminal that takes colour
    for quiet in ({"NO_COLOR": "1"}, {"TERM": "dumb"}):
        out = in_terminal(tmp_path, "search", "harbour", **quiet)
        assert "Harbour" in out and "\x1b[" not in out, (quiet, out)
        assert "«harbour»" in out.casefold() or "«Harbour»" in out
    shown = in_terminal(tmp_path, "clusters", "list", "--since", "all", "--min-size", "1", NO_COLOR="1")
    assert "2017-06-23" in shown and "d ago" not in shown


def test_relative_times() -> None:
    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    assert relative(now - timedelta(hours=3), now) == "3h ago"
    assert relative(now - timedelta(days=6), now) == "6d ago"
    assert relative(now - timedelta(days=3446), now) == "2017-06-27"  # not "3446d ago"
    assert relative(now + timedelta(days=30), now) == "2027-01-02"


def test_a_feeds_warning_is_not_written_over_the_progress_bar(tmp_path: Path, feed_server: FeedServer) -> None:
    feeds = []
    for i in range(6):
        feed_server.set(f"/f{i}.xml", Route(body=b"<html>not a feed</html>" if i == 3 else rss([(f"g{i}", f"T {i}", datetime(2026, 1, 1, tzinfo=UTC))])))
        feeds.append(feed_server.url(f"/f{i}.xml"))
    (tmp_path / "feeds.yaml").write_text(dump_yaml({"settings": {"http": "off"}, "feeds": feeds}))
    out = in_terminal(tmp_path, "fetch")
    warning = next(line for line in out.replace("\r\n", "\n").split("\n") if "/f3.xml" in line and "feed " in line)
    # the bar's line was cleared first: the warning starts a line of its own
    assert "fetching [" not in warning.rsplit("\r", 1)[-1], repr(warning)
    assert warning.rsplit("\r", 1)[-1].startswith("feed "), repr(warning)
