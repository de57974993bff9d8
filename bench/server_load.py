"""Load on the daemon's HTTP server: idle connections, and the web page of a hostile digest.

Runs the real daemon (`scheduler.py`, from `--repo`, default this checkout, so an older
checkout can be measured the same way) on 127.0.0.1 against feeds served from this
process, and prints two tables:

1. idle connections: the daemon's threads, RSS and open descriptors before, while
   `--idle` (default 2,000) connections that send nothing are opened (at the pace the
   daemon takes them in; peak figures), and after they close;
   whether /healthz answered meanwhile, and whether a feed changed meanwhile was polled and
   published (the poll-starvation of issue #12). `--nofile N` runs the daemon with soft and
   hard RLIMIT_NOFILE N (1,024 is systemd's default soft limit).
2. a hostile page: a feed whose `--titles` (8) items have `--title-bytes` (1 MB) titles;
   `--concurrent` (30) simultaneous GET / (each on its own connection): wall time, the
   slowest request, page size, the daemon's CPU seconds and peak RSS meanwhile.

Run (from the repo root):
    .venv/bin/python bench/server_load.py
    .venv/bin/python bench/server_load.py --repo /tmp/older-checkout --nofile 1024
    .venv/bin/python bench/server_load.py --quick --json     # or --only idle / --only page
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feedserver_util import StaticFeedServer  # noqa: E402 - bench scripts are not a package

REPO = Path(__file__).resolve().parents[1]
RSS_TYPE = "application/rss+xml"
_LIMITED = (
    "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({n}, {n})); "
    "sys.argv[0] = 'scheduler.py'; runpy.run_path('scheduler.py', run_name='__main__')"
)


# ---------------------------------------------------------------- the daemon


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid: int) -> dict[str, int]:
    """Threads, RSS (KiB) and open descriptors of `pid`, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Threads", "VmRSS"):
            fields[key] = int(value.split()[0])
    fields["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return fields


def cpu_seconds(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


class Daemon:
    """`python scheduler.py` from `repo` on a fresh database, serving on a free port."""

    def __init__(self, repo: Path, workdir: Path, feeds: list[str], nofile: int | None):
        self.port = free_port()
        cfg = workdir / "feeds.yaml"
        lines = [
            "settings:",
            f"  http: 127.0.0.1:{self.port}",
            "  check_every: 0.5s",
            "  interval: 2s",
            "  parse_workers: 0",
            f"  digest_path: {workdir / 'digest.xml'}",
            "feeds:",
        ]
        cfg.write_text("\n".join(lines + [f"  - {u}" for u in feeds]) + "\n")
        paths = ["--config", str(cfg), "--db", str(workdir / "agg.db")]
        argv = [sys.executable, "scheduler.py", *paths]
        if nofile:
            argv = [sys.executable, "-c", _LIMITED.format(n=nofile), *paths]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
        env["PYTHONPATH"] = str(repo)
        self.log = workdir / "daemon.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                argv, cwd=repo, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.port}{path}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except OSError:
            return 0, b""

    def wait_for(self, check, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited:\n{self.log.read_text()[-3000:]}")
            if check():
                return True
            time.sleep(0.1)
        return False

    def entries(self) -> int:
        code, body = self.get("/digest.json", timeout=5)
        return len(json.loads(body)["items"]) if code == 200 else -1

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------- feeds


def rss(items: list[tuple[str, str]]) -> bytes:
    """(guid, title) items; each with a short text of its own."""
    parts = ['<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>',
             "<title>Bench</title><link>https://example.com/</link>"]  # fmt: skip
    for guid, title in items:
        parts.append(f"<item><guid>{guid}</guid><title>{title}</title>"
                     f"<link>https://example.com/{guid}</link>"
                     f"<description>Text of story {guid}, told once.</description></item>")  # fmt: skip
    parts.append("</channel></rss>")
    return "\n".join(parts).encode()


def words(rng: random.Random, size: int) -> str:
    out, total = [], 0
    while total < size:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
        out.append(w)
        total += len(w) + 1
    return " ".join(out)[:size]


# ---------------------------------------------------------------- 1: idle connections


def idle_connections(repo: Path, workdir: Path, count: int, nofile: int | None) -> dict:
    with StaticFeedServer() as feeds:
        feeds.add("/a.xml", rss([("a1", "First story")]), RSS_TYPE)
        daemon = Daemon(repo, workdir, [feeds.url("/a.xml")], nofile)
        try:
            daemon.wait_for(lambda: daemon.entries() == 1, 60)
            before = status(daemon.proc.pid)
            during = dict(before)
            socks = connect_idle(daemon.port, count, daemon.proc.pid, during)
            # at once, while they are all held (the old server dropped them after 30 s)
            t = time.monotonic()
            healthz = daemon.get("/healthz", timeout=10)[0] == 200
            healthz_s = time.monotonic() - t
            feeds.add("/a.xml", rss([("a1", "First story"), ("a2", "Second story")]), RSS_TYPE)
            t = time.monotonic()
            polled = daemon.wait_for(lambda: daemon.entries() == 2, 20)
            polled_s = time.monotonic() - t
            settle(daemon.proc.pid, during)
            still_open = sum(_open(s) for s in socks)
            for s in socks:
                s.close()
            settle(daemon.proc.pid, {})  # the server notices the closes
            after = status(daemon.proc.pid)
            log = daemon.log.read_text(errors="replace")
        finally:
            daemon.stop()
    return {
        "idle": count,
        "nofile": nofile or resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "threads": [before["Threads"], during["Threads"], after["Threads"]],
        "rss_mb": [round(x["VmRSS"] / 1024, 1) for x in (before, during, after)],
        "fds": [before["fds"], during["fds"], after["fds"]],
        "held_by_server": still_open,
        "healthz_ok": healthz,
        "healthz_s": round(healthz_s, 2),
        "poll_ok": polled,
        "poll_s": round(polled_s, 2),
        "emfile_lines": log.count("Too many open files"),
    }


def connect_idle(port: int, count: int, pid: int, peak: dict[str, int], batch: int = 5) -> list:
    """`count` connections that send nothing, opened `batch` at a time as the daemon takes
    them in (the stdlib server's accept backlog is 5): each batch waits until the daemon
    holds or has closed every connection opened so far, or for 1 s; after two such waits
    in vain (the daemon stopped taking them) the rest are opened at once. `peak` is
    updated with the daemon's figures meanwhile."""
    socks: list[socket.socket] = []
    base = status(pid)["fds"]
    closed = stalls = 0
    with selectors.DefaultSelector() as sel:  # readable: closed by the server
        while len(socks) < count:
            for _ in range(min(batch, count - len(socks))):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                sel.register(s, selectors.EVENT_READ)
                socks.append(s)
            until = time.monotonic() + (1.0 if stalls < 2 else 0.0)
            while True:
                for key, _ in sel.select(0.01):
                    sel.unregister(key.fileobj)
                    closed += 1
                now = status(pid)
                peak.update({k: max(v, now[k]) for k, v in peak.items()})
                if now["fds"] - base + closed >= len(socks):
                    stalls = 0
                    break
                if time.monotonic() >= until:
                    stalls += 1
                    break
    return socks


def settle(pid: int, peak: dict[str, int], quiet: float = 3.0, patience: float = 60.0) -> None:
    """Until the daemon's descriptor count has not changed for `quiet` seconds (connects
    retried by the kernel still arrive), `peak` updated with its figures."""
    deadline = time.monotonic() + patience
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = status(pid)
        peak.update({k: max(v, now[k]) for k, v in peak.items()})
        if now["fds"] != last:
            last, since = now["fds"], time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.25)


def _open(s: socket.socket) -> bool:
    """Whether the server still holds the connection (not closed, not reset)."""
    try:
        return s.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- 2: a hostile page


def hostile_page(repo: Path, workdir: Path, titles: int, size: int, concurrent: int) -> dict:
    rng = random.Random(1)
    body = rss([(f"t{i}", words(rng, size)) for i in range(titles)])
    with StaticFeedServer() as feeds:
        feeds.add("/big.xml", body, RSS_TYPE)
        daemon = Daemon(repo, workdir, [feeds.url("/big.xml")], None)
        try:
            if not daemon.wait_for(lambda: daemon.entries() == titles, 120):
                raise SystemExit(f"the digest never had {titles} entries")
            code, page = daemon.get("/", timeout=120)
            assert code == 200, code
            pid = daemon.proc.pid
            peak = [status(pid)["VmRSS"]]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.05):
                    with contextlib.suppress(OSError, KeyError):  # KeyError: it exited
                        peak.append(status(pid)["VmRSS"])

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            cpu = cpu_seconds(pid)

            def one(_: int) -> float:
                t = time.monotonic()
                code, got = daemon.get("/", timeout=300)
                assert code == 200 and got.startswith(b"<!doctype html>"), (code, len(got))
                return time.monotonic() - t

            t = time.monotonic()
            with ThreadPoolExecutor(concurrent) as pool:
                latencies = list(pool.map(one, range(concurrent)))
            wall = time.monotonic() - t
            cpu = cpu_seconds(pid) - cpu
            done.set()
            sampler.join()
        finally:
            daemon.stop()
    return {
        "titles": titles,
        "title_bytes": size,
        "feed_mb": round(len(body) / 1e6, 1),
        "page_kb": round(len(page) / 1000, 1),
        "concurrent": concurrent,
        "wall_s": round(wall, 2),
        "slowest_s": round(max(latencies), 2),
        "daemon_cpu_s": round(cpu, 2),
        "peak_rss_mb": round(max(peak) / 1024, 1),
    }


# ---------------------------------------------------------------- main


def print_idle(idle: dict) -> None:
    print(f"\n1. {idle['idle']} idle connections (daemon RLIMIT_NOFILE {idle['nofile']})")
    print(f"{'':24}{'before':>10}{'peak':>10}{'after':>10}")
    print(f"{'threads':24}" + "".join(f"{v:>10}" for v in idle["threads"]))
    print(f"{'RSS MB':24}" + "".join(f"{v:>10}" for v in idle["rss_mb"]))
    print(f"{'open descriptors':24}" + "".join(f"{v:>10}" for v in idle["fds"]))
    print(f"connections not closed by the server (held or queued): {idle['held_by_server']}")
    print(f"/healthz during: {'ok' if idle['healthz_ok'] else 'FAILED'} ({idle['healthz_s']} s)")
    print(f"a changed feed polled and published during: {'ok' if idle['poll_ok'] else 'FAILED'} "
          f"({idle['poll_s']} s); 'Too many open files' in the log: {idle['emfile_lines']}")  # fmt: skip


def print_page(page: dict) -> None:
    print(f"\n2. GET / of a digest with {page['titles']} titles of {page['title_bytes']:,} bytes "
          f"(feed {page['feed_mb']} MB)")  # fmt: skip
    print(f"page size               {page['page_kb']:,} KB")
    print(f"{page['concurrent']} concurrent GET /   {page['wall_s']} s wall, "
          f"slowest {page['slowest_s']} s")  # fmt: skip
    print(f"daemon CPU meanwhile    {page['daemon_cpu_s']} s")
    print(f"daemon peak RSS         {page['peak_rss_mb']} MB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout to run the daemon from")
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--nofile", type=int, default=None, help="the daemon's RLIMIT_NOFILE")
    ap.add_argument("--titles", type=int, default=8)
    ap.add_argument("--title-bytes", type=int, default=1_000_000)
    ap.add_argument("--concurrent", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="200 idle, 8 x 100 KB titles, 10 requests")
    ap.add_argument("--only", choices=("idle", "page"), help="run one of the two parts")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.idle, args.title_bytes, args.concurrent = 200, 100_000, 10
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):  # this process holds the idle clients
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = Path(tempfile.mkdtemp(prefix="server_load-"))
    if not args.json:
        print(f"daemon from {args.repo}", flush=True)
    try:
        (workdir / "idle").mkdir()
        (workdir / "page").mkdir()
        idle = page = None
        if args.only != "page":
            idle = idle_connections(args.repo, workdir / "idle", args.idle, args.nofile)
            if not args.json:
                print_idle(idle)
        if args.only != "idle":
            page = hostile_page(args.repo, workdir / "page", args.titles, args.title_bytes,
                                args.concurrent)  # fmt: skip
            if not args.json:
                print_page(page)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({"repo": str(args.repo), "idle": idle, "page": page}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
