"""Config and CLI misuse: each case must give ONE clear line on stderr naming the file at
fault, a non-zero exit, no traceback, and must leave the database exactly as it was
(sha256 of the file and of its -wal, when they exist) and create nothing.

Every case runs `aggregator fetch`, `aggregator clusters list` and `aggregator run --once`,
each on its own copy of the case's workspace so the three run at once.

Tests run as root, which reads a mode-000 file anyway: the unreadable-config cases use a
folder in the file's place, and a mode-000 file read by a child whose capability bounding
set lacks CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (util-linux `setpriv`). A database
"in a read-only folder" is /proc/aggregator.db: /proc refuses new files even to root.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from random import Random

import pytest
from daemon_util import REPO, FeedFarm, child_env, file_digest, record, write_config
from feedserver import FeedServer

COMMANDS = {
    "fetch": ("fetch",),
    "clusters list": ("clusters", "list"),
    "run --once": ("run", "--once"),
}
TIMINGS: dict[str, float] = {}


@dataclass
class Case:
    """A workspace to break: the config and database the commands are given."""

    root: Path
    cfg: Path
    db: Path
    blame: str  # the path the message must name
    prefix: tuple[str, ...] = ()  # argv prefix for the child (e.g. setpriv)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(feeds.yaml text, a real database holding two fetched feeds), made once."""
    root = tmp_path_factory.mktemp("good")
    with FeedServer() as server:
        farm = FeedFarm(server, Random(7), count=2)
        cfg, db = root / "feeds.yaml", root / "agg.db"
        write_config(cfg, farm.urls(), parse_workers=0, interval="1h")
        done = subprocess.run(
            [sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), "fetch"],
            cwd=REPO, env=child_env(), capture_output=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()
        assert not db.with_name("agg.db-wal").exists()  # closed cleanly: one self-contained file
        yield cfg.read_text(encoding="utf-8"), db


# ---------------------------------------------------------------- the cases


def _workspace(root: Path, good: tuple[str, Path]) -> Case:
    text, db = good
    root.mkdir(parents=True)
    (root / "feeds.yaml").write_text(text, encoding="utf-8")
    shutil.copyfile(db, root / "agg.db")
    return Case(root, root / "feeds.yaml", root / "agg.db", blame=str(root / "feeds.yaml"))


def _config(text: str) -> Callable[[Case], None]:
    def apply(case: Case) -> None:
        case.cfg.write_text(text, encoding="utf-8")

    return apply


def missing_config(case: Case) -> None:
    case.cfg.unlink()


def config_is_a_folder(case: Case) -> None:
    case.cfg.unlink()
    case.cfg.mkdir()
    (case.cfg / "feeds.yaml").write_text("feeds: []\n")


def config_mode_000(case: Case) -> None:
    if not shutil.which("setpriv"):
        pytest.skip("needs util-linux setpriv to drop root's CAP_DAC_OVERRIDE; "
                    "config_is_a_folder covers an unreadable config")  # fmt: skip
    case.cfg.chmod(0)
    case.prefix = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")


def config_not_utf8(case: Case) -> None:
    case.cfg.write_bytes(
        b"settings:\n  interval: 5m\nfeeds:\n  - http://example.org/\xff\xfe.xml\n"
    )


def db_in_read_only_folder(case: Case) -> None:
    case.db.unlink()
    case.db = Path("/proc/aggregator.db")
    case.blame = str(case.db)


def db_random_bytes(case: Case) -> None:
    case.db.write_bytes(Random(13).randbytes(64 * 1024))
    case.blame = str(case.db)


def db_truncated(case: Case) -> None:
    data = case.db.read_bytes()
    case.db.write_bytes(data[: len(data) * 2 // 5])
    case.blame = str(case.db)


def db_newer_schema(case: Case) -> None:
    conn = sqlite3.connect(case.db)
    conn.execute(
        "INSERT INTO schema_version VALUES (999, '999_future.sql', '2030-01-01T00:00:00Z')"
    )
    conn.commit()
    conn.close()
    case.blame = str(case.db)


def db_of_another_application(case: Case) -> None:
    case.db.unlink()
    conn = sqlite3.connect(case.db)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('mine')")
    conn.commit()
    conn.close()
    case.blame = str(case.db)


def db_is_a_folder(case: Case) -> None:
    case.db.unlink()
    case.db.mkdir()
    case.blame = str(case.db)


FEEDS = "feeds:\n  - http://127.0.0.1:9/a.xml\n"
CASES: dict[str, Callable[[Case], None]] = {
    "missing feeds.yaml": missing_config,
    "feeds.yaml is a folder (unreadable)": config_is_a_folder,
    "feeds.yaml mode 000 (unreadable, root without DAC override)": config_mode_000,
    "invalid YAML": _config("settings:\n  interval: [5m\nfeeds:\n  - http://127.0.0.1:9/a.xml\n"),
    "unknown settings key": _config(f"settings:\n  intervall: 5m\n{FEEDS}"),
    "negative interval": _config(f"settings:\n  interval: -5m\n{FEEDS}"),
    "database in a read-only folder (/proc)": db_in_read_only_folder,
    "database is random bytes": db_random_bytes,
    "database truncated to 40%": db_truncated,
    "database from schema version 999": db_newer_schema,
}
# More variants of the same mistakes, with `run --once` only (each refusal costs a ~2s
# interpreter start, and the suite must stay within its time budget).
VARIANTS: dict[str, Callable[[Case], None]] = {
    "feeds.yaml not UTF-8": config_not_utf8,
    "unknown top-level key": _config(f"setings:\n  interval: 5m\n{FEEDS}"),
    "unknown feed key": _config("feeds:\n  - url: http://127.0.0.1:9/a.xml\n    intreval: 5m\n"),
    "negative feed interval": _config(
        "feeds:\n  - url: http://127.0.0.1:9/a.xml\n    interval: -1h\n"
    ),
    "negative check_every": _config(f"settings:\n  check_every: -1s\n{FEEDS}"),
    "zero interval": _config(f"settings:\n  interval: 0s\n{FEEDS}"),
    "database of another application": db_of_another_application,
    "database path is a folder": db_is_a_folder,
}
ALL = {**CASES, **VARIANTS}


# ---------------------------------------------------------------- running one case


def _snapshot(case: Case) -> dict[str, str | None]:
    """sha256 of the database and its -wal (None: absent), and which files exist beside it."""
    state: dict[str, str | None] = {}
    for path in (case.db, case.db.with_name(case.db.name + "-wal")):
        state[str(path)] = file_digest(path) if path.is_file() else (
            "<folder>" if path.is_dir() else None)  # fmt: skip
    folder = case.db.parent
    if folder == Path("/proc"):
        state["files"] = ",".join(sorted(p.name for p in folder.glob("aggregator*")))
    elif folder.is_dir():
        state["files"] = ",".join(sorted(p.name for p in folder.iterdir()))
    else:
        state["files"] = f"{folder} absent"
    return state


def _run(case: Case, command: str) -> tuple[str, list[str]]:
    """Run one command on `case`; the problems found."""
    argv = [*case.prefix, sys.executable, "-m", "aggregator", "--config", str(case.cfg),
            "--db", str(case.db), *COMMANDS[command]]  # fmt: skip
    before = _snapshot(case)
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, env=child_env(), capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    TIMINGS[command] = max(TIMINGS.get(command, 0.0), time.monotonic() - started)
    after = _snapshot(case)
    err = done.stderr.decode("utf-8", errors="replace")
    lines = [line for line in err.splitlines() if line.strip()]
    problems = []
    if done.returncode == 0:
        problems.append("exit 0 (expected a non-zero exit)")
    if "Traceback" in err:
        problems.append("a traceback on stderr")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr (expected one)")
    elif not lines[0].startswith("aggregator: "):
        problems.append("stderr does not start with 'aggregator: '")
    if case.blame not in err:
        problems.append(f"stderr does not name {case.blame}")
    if after != before:
        changed = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
        problems.append(f"the database changed: {changed}")
    summary = f"exit {done.returncode}: {lines[-1] if lines else '(no stderr)'}"
    if problems:
        tail = err.strip().splitlines()[-6:]
        summary += "\n      " + "; ".join(problems) + "\n      stderr tail: " + " | ".join(tail)
    return summary, problems


@pytest.fixture(scope="module")
def outcomes(good: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every case x command, run at once in a pool (each refusal costs a ~2s interpreter
    start, mostly imports): {case: {command: (summary, problems)}} or {case: skip reason}."""
    root = tmp_path_factory.mktemp("misuse")
    jobs = []
    found: dict = {}
    for n, (name, breaker) in enumerate(ALL.items()):
        for command in COMMANDS if name in CASES else ("run --once",):
            case = _workspace(
                root / f"case{n:02d}" / command.replace(" ", "_").replace("-", ""), good
            )
            try:
                breaker(case)
            except pytest.skip.Exception as exc:
                found[name] = str(exc)
                break
            jobs.append((name, command, case))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda job: _run(job[2], job[1]), jobs))
    for (name, command, _), result in zip(jobs, results, strict=True):
        found.setdefault(name, {})[command] = result
    return found


@pytest.mark.parametrize("name", ALL)
def test_misuse_gives_one_clear_message_and_leaves_the_database_alone(
    name: str, outcomes: dict
) -> None:
    results = outcomes[name]
    if isinstance(results, str):
        pytest.skip(results)
    report = "\n".join(f"  {command}: {summary}" for command, (summary, _) in results.items())
    print(f"\n{name}:\n{report}")
    failed = {command: problems for command, (_, problems) in results.items() if problems}
    assert not failed, f"{name}:\n{report}"


def test_root_cannot_read_mode_000_with_setpriv(tmp_path: Path) -> None:
    """The mode-000 case really is unreadable for its child (else it would prove nothing)."""
    if not shutil.which("setpriv"):
        pytest.skip("util-linux setpriv is not installed")
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    done = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
                           "cat", str(secret)], capture_output=True)  # fmt: skip
    assert done.returncode != 0 and b"Permission denied" in done.stderr, done
    assert os.access(secret, os.R_OK)  # while this (root) process still can


def test_zz_misuse_figures() -> None:
    """Slowest refusal per command (runs last in this module)."""
    if TIMINGS:
        record("misuse: slowest refusal per command",
               ", ".join(f"{c} {t:.2f}s" for c, t in TIMINGS.items()))  # fmt: skip
