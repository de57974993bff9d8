"""Running the real `aggregator` CLI against hostile servers, and reading what it left.

`run_cli` starts `python -m aggregator ...` as a subprocess and measures its peak resident
memory two ways: VmRSS sampled from /proc every 20 ms (what a watcher would see) and the
kernel's exact high-water mark from wait4's rusage. Figures worth keeping (peak RSS of the
big cases, ingest times) go into FIGURES, which conftest.py prints at the end of the session.
"""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from email.utils import format_datetime
from html import escape
from pathlib import Path
from typing import Any

from aggregator.config import dump_yaml
from aggregator.timeutil import utcnow

REPO = Path(__file__).resolve().parents[2]
# Fast settings for every bad-input run: a hostile server can hold us at most `timeout`.
FAST = {"timeout": "3s", "connect_timeout": "2s", "max_bytes": "1MB", "parse_workers": 0,
        "interval": "1h", "per_host": 8}  # fmt: skip

FIGURES: dict[str, str] = {}  # "case: figure" lines for the end-of-session summary


def record(name: str, value: str) -> None:
    FIGURES[name] = value
    print(f"\nrobustness figure: {name}: {value}")


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("http_proxy", None)
    env.pop("HTTP_PROXY", None)
    env.pop("all_proxy", None)
    env.pop("ALL_PROXY", None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


@dataclass
class CliRun:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes
    elapsed: float
    peak_rss_mb: float  # kernel high-water mark (ru_maxrss)
    sampled_rss_mb: float  # highest VmRSS seen polling /proc every 20 ms

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")

    def summary(self) -> dict[str, dict[str, str]]:
        """`aggregator fetch` stdout (TSV when piped) as {feed name: row}."""
        lines = self.out.splitlines()
        assert lines and lines[0].startswith("status\t"), self.out + self.err
        header = lines[0].split("\t")
        rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
        return {r["feed"]: r for r in rows}


def _status_kb(pid: int, field: bytes) -> int:
    """A /proc/PID/status figure in kB (VmRSS: now; VmHWM: the high-water mark since exec)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(field + b":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def run_cli(config: Path, db: Path, *args: str, timeout: float = 120) -> CliRun:
    """`python -m aggregator --config CONFIG --db DB ARGS` to completion, with its memory."""
    argv = [sys.executable, "-m", "aggregator", "--config", str(config), "--db", str(db), *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # Linux hands a child the forking process's high-water mark (the mm copied at fork
        # is recorded at exec), so a child's ru_maxrss is never below this test process's
        # own peak; when it is not above it, the child's own VmHWM (sampled) is the figure
        parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=REPO, env=child_env(), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)  # fmt: skip
        sampled = high_water = 0
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                sampled = max(sampled, _status_kb(proc.pid, b"VmRSS"))
                high_water = max(high_water, _status_kb(proc.pid, b"VmHWM"))
                if time.monotonic() - started > timeout:
                    proc.kill()
                    _, status, usage = os.wait4(proc.pid, 0)
                    proc.returncode = -9
                    out.seek(0)
                    err.seek(0)
                    raise AssertionError(
                        f"{' '.join(argv[3:])} still running after {timeout:.0f}s; killed\n"
                        + err.read().decode(errors="replace")[-3000:]
                    )
                time.sleep(0.02)
        finally:
            if proc.returncode is None and proc.poll() is None:
                proc.kill()
                proc.wait()
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        peak = usage.ru_maxrss if usage.ru_maxrss > parent_peak else max(high_water, sampled)
        return CliRun(argv, proc.returncode, out.read(), err.read(), elapsed,
                      peak / 1024, sampled / 1024)  # fmt: skip


class Workspace:
    """feeds.yaml + database in one folder; runs the CLI on them."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.cfg = tmp / "feeds.yaml"
        self.db = tmp / "agg.db"

    def write_config(self, feeds: list[Any], **settings: Any) -> None:
        doc = {"settings": {**FAST, **settings}, "feeds": feeds}
        self.cfg.write_text(dump_yaml(doc), "utf-8")

    def cli(self, *args: str, timeout: float = 120) -> CliRun:
        return run_cli(self.cfg, self.db, *args, timeout=timeout)

    def fetch(self, timeout: float = 120, tracebacks_ok: bool = False) -> CliRun:
        """`aggregator fetch`; it must exit 0 and (unless told) log no traceback."""
        run = self.cli("fetch", timeout=timeout)
        assert run.returncode == 0, f"aggregator fetch exited {run.returncode}:\n{run.err[-4000:]}"
        if not tracebacks_ok:
            assert "Traceback" not in run.err, "unexpected exception logged:\n" + run.err[-4000:]
        return run

    def query(self, sql: str, *params: Any) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def feed(self, url: str) -> dict[str, Any]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            row = conn.execute("SELECT * FROM feeds WHERE url = ?", (url,)).fetchone()
            assert row is not None, f"no feed {url} in the database"
            out = dict(row)
            out["items"] = conn.execute(
                "SELECT count(*) FROM items WHERE feed_id = ?", (row["id"],)
            ).fetchone()[0]
            return out
        finally:
            conn.close()

    def items(self, url: str) -> list[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(
                "SELECT i.* FROM items i JOIN feeds f ON f.id = i.feed_id WHERE f.url = ? "
                "ORDER BY i.id", (url,))]  # fmt: skip
        finally:
            conn.close()

    def all_text(self) -> str:
        """Every text (and blob, decoded) value of every table, one per line."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            parts = []
            for table in tables:
                for row in conn.execute(f'SELECT * FROM "{table}"'):
                    for value in row:
                        if isinstance(value, str):
                            parts.append(value)
                        elif isinstance(value, bytes):
                            parts.append(value.decode("latin-1"))
            return "\n".join(parts)
        finally:
            conn.close()


# ---------------------------------------------------------------- feeds


def rss(title: str, items: list[dict[str, str]], extra_channel: str = "") -> bytes:
    """An RSS 2.0 document; item dicts hold raw XML fragments by tag name (escape yourself)."""
    parts = ['<?xml version="1.0" encoding="utf-8"?>', '<rss version="2.0"><channel>',
             f"<title>{title}</title><link>https://example.com/</link>",
             "<description>test</description>", extra_channel]  # fmt: skip
    for item in items:
        parts.append("<item>" + "".join(f"<{k}>{v}</{k}>" for k, v in item.items()) + "</item>")
    parts.append("</channel></rss>")
    return "\n".join(parts).encode("utf-8")


def good_feed(tag: str = "good") -> bytes:
    """A healthy feed with two distinct stories: the control in every run."""
    now = format_datetime(utcnow(), usegmt=True)
    stories = [
        ("Council approves new river bridge after long debate",
         "The city council voted on Tuesday to approve construction of a new bridge across "
         "the river, ending a debate that lasted more than three years and divided residents."),
        ("Local bakery wins national bread award",
         "A family bakery on Market Street has won the national award for its sourdough, "
         "beating more than two hundred entries from bakeries all over the country this year."),
    ]  # fmt: skip
    return rss(f"Good {tag}", [
        {"guid": f"{tag}-{i}", "title": escape(t), "link": f"https://good.example/{tag}/{i}",
         "pubDate": now, "description": escape(f"<p>{d}</p>")}
        for i, (t, d) in enumerate(stories)
    ])  # fmt: skip
