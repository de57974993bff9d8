"""`aggregator demo`: the bundled sample feeds, their dates, and the command end to end
(`--no-serve` prints the shared stories; serving answers the digest and the web view and
stops cleanly on Ctrl-C)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import httpx
from test_daemon import REPO, child_env, free_port, wait_for

from aggregator.demo import OUTLETS, feed_template, fill_dates

NOW = datetime(2026, 11, 25, 13, 0, 0, tzinfo=UTC)


def demo(*args: str, **kw) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "aggregator", "demo", *args], cwd=REPO,
                            env=child_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, **kw)  # fmt: skip


def test_fill_dates() -> None:
    text = "<a>{{now}}</a><b>{{ago 2h05m}}</b><c>{{ago 1d}}</c>"
    assert fill_dates(text, NOW, atom=True) == (
        "<a>2026-11-25T13:00:00Z</a><b>2026-11-25T10:55:00Z</b><c>2026-11-24T13:00:00Z</c>"
    )
    assert fill_dates(text, NOW, atom=False).startswith(
        "<a>Wed, 25 Nov 2026 13:00:00 GMT</a><b>Wed, 25 Nov 2026 10:55:00 GMT</b>"
    )


def test_sample_feeds_are_package_data_and_parse_cleanly() -> None:
    total = 0
    for outlet in OUTLETS:
        body = fill_dates(feed_template(outlet.file), NOW, atom=outlet.file.endswith(".atom"))
        assert "{{" not in body, outlet.file
        parsed = feedparser.parse(body.encode())
        assert not parsed.bozo, (outlet.file, parsed.bozo_exception)
        assert parsed.feed.title == outlet.name
        assert 8 <= len(parsed.entries) <= 12, outlet.file
        assert all(e.get("published_parsed") or e.get("updated_parsed") for e in parsed.entries)
        total += len(parsed.entries)
    assert total >= 50


def test_demo_no_serve_prints_the_stories_several_outlets_carried(tmp_path: Path) -> None:
    proc = demo("--no-serve", "--dir", str(tmp_path / "demo"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    table_text = out.split("size\tsources\ttitle\toutlets\n", 1)[1].split("\n\n", 1)[0]
    table = [line.split("\t") for line in table_text.splitlines()]
    assert len(table) >= 3, out
    assert all(int(sources) >= 2 for _, sources, _, _ in table)
    by_title = {
        title: (int(size), int(sources), outlets) for size, sources, title, outlets in table
    }
    ferry = by_title["Aldren ferry operator suspends night crossings after engine failure"]
    assert ferry[:2] == (6, 6) and "Lakeside Daily" in ferry[2] and "The Meridian Post" in ferry[2]
    assert re.search(r"55 items from 6 feeds became \d+ stories; 8 were carried by more", out)
    assert (tmp_path / "demo" / "feeds.yaml").exists() and (tmp_path / "demo" / "demo.db").exists()


def test_demo_serves_the_digest_and_web_view_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    proc = demo("--http", f"127.0.0.1:{port}", "--dir", str(tmp_path))
    try:
        lines: list[str] = []

        def announced() -> bool:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise AssertionError(
                    f"demo exited {proc.returncode}: {''.join(lines)}{proc.stderr.read()}"
                )
            lines.append(line)
            return "web view at" in line

        wait_for("the demo to announce its URLs", announced, timeout=60)
        base = f"http://127.0.0.1:{port}"
        assert lines[-1].strip() == f"digest at {base}/digest.atom, web view at {base}/"
        with httpx.Client(base_url=base, trust_env=False, timeout=5) as http:
            page = wait_for("the web view", lambda: (r := http.get("/")).status_code == 200 and r)
            assert "6 sources" in page.text and "Storm Idris" in page.text
            assert feedparser.parse(http.get("/digest.atom").content).entries
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0 and "demo stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
