"""A throwaway PostgreSQL server for tests, started and stopped by the tests themselves.

Why a real server: what the PostgreSQL backend must get right (the SQL dialect, transactions,
locks between several daemons) lives in the server, so tests talk to a real one. Each server
has its own folder in the system temp dir holding its data, its log and its unix socket, and
listens on no TCP port, so the servers of test sessions running side by side never collide.

Usage::

    with PostgresServer() as pg:
        url = pg.new_database()   # postgresql://postgres@/test_1?host=/tmp/aggregator-pg-...&port=5432
        psycopg.connect(url)

initdb refuses to run as root: as root the server runs as the `postgres` user (Debian's
package creates it) and its folder is chowned to it; otherwise it runs as ourselves. The
socket accepts any local user without a password (trust), as a child run as root needs.

However this process ends, no server is left running: stop() runs on exit (atexit), and a
watchdog child (`python pgserver.py --watchdog ...`) stops the server and removes its folder
when this process dies without that, by SIGKILL included. The watchdog's stdin is a pipe
only this process holds, so its EOF means we are gone.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

INSTALL_HINT = (
    "install Debian's postgresql package: apt-get install postgresql, "
    "or run `make test`, which installs it"
)
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"  # the OS account as root, and the database superuser
PORT = 5432  # names the socket file (.s.PGSQL.5432) only: there is no TCP listener
WAIT_S = 120  # pg_ctl's wait for start and stop, generous for a busy 2-core machine
LOG_TAIL_LINES = 30

# A throwaway server: nothing must survive a crash (durability off), no replication (minimal
# WAL), enough connections for several daemons with their pools.
SETTINGS: Mapping[str, str] = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_connections": "200",
}


class PostgresServerError(RuntimeError):
    """The server's binaries are missing or it could not be set up or started; the message
    says what to do."""


@dataclass(frozen=True)
class Binaries:
    """The two server programs we run; pg_ctl finds `postgres` next to itself."""

    initdb: Path
    pg_ctl: Path


def find_binaries(bindirs: str = DEBIAN_BINDIRS, path: str | None = None) -> Binaries:
    """The newest Debian server (/usr/lib/postgresql/NN/bin, where Debian puts it, off PATH),
    else initdb and pg_ctl on `path` (default PATH)."""
    for bindir in sorted(map(Path, glob.glob(bindirs)), key=_version_key, reverse=True):
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return Binaries(bindir / "initdb", bindir / "pg_ctl")
    initdb, pg_ctl = shutil.which("initdb", path=path), shutil.which("pg_ctl", path=path)
    if initdb and pg_ctl:
        return Binaries(Path(initdb), Path(pg_ctl))
    raise PostgresServerError(
        f"PostgreSQL server binaries (initdb, pg_ctl) not found in {bindirs} or on PATH: "
        f"{INSTALL_HINT}"
    )


def _version_key(bindir: Path) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,): 15 sorts after 9.6."""
    parts = bindir.parent.name.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (-1,)


def server_account() -> pwd.struct_passwd | None:
    """Whom the server runs as: the postgres user when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresServerError(
            f"initdb refuses to run as root and there is no `{SERVER_USER}` user to run "
            f"the test server as: {INSTALL_HINT} (the package creates the user)"
        ) from None


def _run(
    cmd: list[str | Path], account: pwd.struct_passwd | None, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run a server program as `account`, without our PG* variables (PGDATA, PGPORT, ...
    would redirect it); its output is captured for error messages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    as_user = {}
    if account is not None:
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        **as_user,
    )


def stop_and_remove(pg_ctl: Path, folder: Path, account: pwd.struct_passwd | None) -> None:
    """Stop the server in `folder` at once and remove the folder. -m immediate: nothing here
    needs a clean shutdown. Even if pg_ctl fails the folder goes, and a postmaster whose
    postmaster.pid has vanished shuts itself down within a minute."""
    data = folder / "data"
    stopped = None
    if (data / "postmaster.pid").exists():
        stopped = _run(
            [pg_ctl, "stop", "-D", data, "-m", "immediate", "-w", "-t", str(WAIT_S)],
            account,
            cwd=folder,
        )
    shutil.rmtree(folder, ignore_errors=True)
    if stopped is not None and stopped.returncode != 0:
        raise PostgresServerError(
            f"pg_ctl stop failed for {data} (exit {stopped.returncode}): "
            f"{stopped.stdout}{stopped.stderr}"
        )


class PostgresServer:
    """One throwaway server: start() (or `with`), new_database() per test, stop()."""

    def __init__(
        self, settings: Mapping[str, str] | None = None, binaries: Binaries | None = None
    ) -> None:
        """`settings` are postgresql.conf lines (name -> value as written there) over
        SETTINGS; `binaries` default to find_binaries()."""
        self.settings = {**SETTINGS, **(settings or {})}
        self.binaries = binaries
        self._account: pwd.struct_passwd | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self.folder: Path | None = None  # set while the server is up

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def data_dir(self) -> Path:
        return self._up() / "data"

    @property
    def log_path(self) -> Path:
        return self._up() / "server.log"

    @property
    def pid(self) -> int:
        """The postmaster's pid, from the first line of its postmaster.pid."""
        return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])

    def start(self) -> PostgresServer:
        """initdb a new cluster in a fresh folder and start it; on any failure the folder is
        removed and the error says what to do."""
        if self.folder is not None:
            return self
        binaries = self.binaries = self.binaries or find_binaries()
        self._account = server_account()
        # Directly in the system temp dir: pytest's tmp_path sits under a root-only 0700
        # folder the postgres user cannot enter.
        self.folder = Path(tempfile.mkdtemp(prefix="aggregator-pg-"))
        atexit.register(self.stop)
        try:
            if self._account is not None:
                os.chown(self.folder, self._account.pw_uid, self._account.pw_gid)
            self._watchdog = self._start_watchdog(binaries.pg_ctl)
            self._initdb(binaries.initdb)
            self._configure()
            self._pg_ctl_start(binaries.pg_ctl)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and remove its folder; does nothing when it is not running."""
        if self.folder is None:
            return
        folder, self.folder = self.folder, None
        atexit.unregister(self.stop)
        try:
            stop_and_remove(self.binaries.pg_ctl, folder, self._account)  # type: ignore[union-attr]
        finally:
            if self._watchdog is not None:
                self._watchdog.stdin.close()  # type: ignore[union-attr]
                self._watchdog.wait(timeout=WAIT_S)
                self._watchdog = None

    def url(self, name: str = "postgres") -> str:
        """The URL of database `name`, as psycopg and `--db` take it: the socket folder as
        `host`, the port naming the socket file (so a PGPORT in the environment cannot)."""
        host = quote(str(self._up()), safe="/")
        return f"postgresql://{SERVER_USER}@/{quote(name, safe='')}?host={host}&port={PORT}"

    def new_database(self, name: str | None = None) -> str:
        """Create a fresh empty database (default name test_N) and return its URL.
        From template0, which nobody can connect to, so a test using template1 cannot
        block it; STRATEGY file_copy copies the files (a checkpoint is cheap with
        fsync off) where PostgreSQL 15's default wal_log writes them all to the WAL."""
        from psycopg import sql

        name = name or f"test_{next(self._names)}"
        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 STRATEGY file_copy").format(
                    sql.Identifier(name)
                )
            )
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database new_database() returned `url` for, closing its connections
        (WITH (FORCE)): a daemon a test left running does not keep it."""
        from psycopg import conninfo, sql

        name = conninfo.conninfo_to_dict(url)["dbname"]
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def _admin(self):  # -> psycopg.Connection; psycopg is imported only when it is used
        import psycopg

        return psycopg.connect(self.url("postgres"), autocommit=True)

    def _up(self) -> Path:
        if self.folder is None:
            raise PostgresServerError("the PostgreSQL test server is not running: start() it")
        return self.folder

    def _initdb(self, initdb: Path) -> None:
        """A UTF8 cluster in the C.UTF-8 locale: code-point order like SQLite's, and unlike
        plain C, lower()/upper() know letters beyond ASCII. --no-sync: throwaway."""
        done = _run(
            [initdb, "-D", self.data_dir, "-U", SERVER_USER, "--auth=trust", "--encoding=UTF8",
             "--locale=C.UTF-8", "--no-sync", "--no-instructions"],
            self._account,
            cwd=self._up(),
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresServerError(
                f"initdb failed (exit {done.returncode}) in {self._up()}: "
                f"{_tail(done.stdout + done.stderr)}\n{INSTALL_HINT}"
            )

    def _configure(self) -> None:
        """Append our settings to postgresql.conf; the last line for a name wins."""
        lines = [f"{name} = {value}" for name, value in self.settings.items()]
        lines.append(f"unix_socket_directories = '{self._up()}'")
        lines.append(f"port = {PORT}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/pgserver.py: a throwaway test server\n")
            conf.write("\n".join(lines) + "\n")

    def _pg_ctl_start(self, pg_ctl: Path) -> None:
        done = _run(
            [pg_ctl, "start", "-D", self.data_dir, "-l", self.log_path, "-w", "-t", str(WAIT_S)],
            self._account,
            cwd=self._up(),
        )
        if done.returncode != 0:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise PostgresServerError(
                f"the PostgreSQL test server did not start (pg_ctl exit {done.returncode}: "
                f"{(done.stdout + done.stderr).strip()}); its log {self.log_path} ended "
                f"with:\n{_tail(log)}\n{INSTALL_HINT}"
            )

    def _start_watchdog(self, pg_ctl: Path) -> subprocess.Popen[bytes]:
        """The child that cleans up if we die (see the module docstring); in its own session,
        so a Ctrl-C to our process group does not reach it before we have stopped."""
        return subprocess.Popen(
            [sys.executable, __file__, "--watchdog", str(pg_ctl), str(self._up())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-LOG_TAIL_LINES:])


def watchdog(pg_ctl: Path, folder: Path) -> None:
    """Wait for EOF on stdin (our owner has stopped or died), then clean up what is left."""
    sys.stdin.buffer.read()
    if folder.exists():
        stop_and_remove(pg_ctl, folder, server_account())


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "--watchdog":
        sys.exit("usage: pgserver.py --watchdog PG_CTL FOLDER (started by PostgresServer)")
    watchdog(Path(sys.argv[2]), Path(sys.argv[3]))
