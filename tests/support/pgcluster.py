"""A private PostgreSQL cluster for fault tests: initdb into a temporary directory, then a
``postgres`` on a free loopback port that a test may stop (fast or immediate) and start again
on the same port and data.

The shared server the other tests use is never touched. The binaries are found through
``pg_config --bindir``, then ``/usr/lib/postgresql/*/bin`` (Debian), then ``PATH``; without
them, ``PgCluster.require()`` skips the test, unless ``MODELREG_TEST_REQUIRE_POSTGRES=1``
(CI), where it fails. PostgreSQL refuses to run as root: as root, the cluster runs as the
``postgres`` user and its directory is handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

import psycopg
import pytest

from tests.support.ports import free_port

REQUIRE_ENV = "MODELREG_TEST_REQUIRE_POSTGRES"
StopMode = Literal["smart", "fast", "immediate"]
_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, or None."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in path.parent.name.split(".") if p.isdigit())

    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    return None


class PgCluster:
    """One private cluster. ``start()`` and ``stop()`` may alternate any number of times."""

    def __init__(self, bindir: Path, *, port: int | None = None) -> None:
        self.bindir = bindir
        self.port = port or free_port()
        as_root = os.geteuid() == 0
        # As root, the postgres user must be able to reach the directory: /tmp always lets it
        # (a TMPDIR of root's own might not).
        self.root = Path(tempfile.mkdtemp(prefix="modelreg-pg-", dir="/tmp" if as_root else None))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.logfile = self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        if as_root:
            # initdb and postgres refuse root: the cluster belongs to the postgres user.
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root, and there is no postgres user") from None
            self._user = "postgres"
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.sockets.mkdir()
        if self._user is not None:
            os.chown(self.sockets, pwd.getpwnam(self._user).pw_uid, -1)
        self._initdb()

    @classmethod
    def require(cls) -> PgCluster:
        """A new cluster, or skip (fail with ``MODELREG_TEST_REQUIRE_POSTGRES=1``)."""
        bindir = find_bindir()
        if bindir is None:
            message = "no PostgreSQL binaries (initdb, postgres) on this machine"
            if os.environ.get(REQUIRE_ENV) == "1":
                pytest.fail(f"{message}, and {REQUIRE_ENV}=1")
            pytest.skip(message)
        return cls(bindir)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres connect_timeout=3"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self._user,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed:\n{result.stdout}\n{result.stderr}")

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )

    def start(self, *, timeout: float = 60) -> PgCluster:
        """Start the server on its port and data; return once it accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = self.logfile.open("ab")
        try:
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.sockets),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "shared_buffers=32MB",
                ],
                user=self._user,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with psycopg.connect(self.dsn) as conn:
                    conn.execute("SELECT 1")
                return self
            except psycopg.OperationalError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not accept connections:\n{self.log()}")
            time.sleep(0.1)

    def stop(self, mode: StopMode = "fast", *, timeout: float = 60) -> None:
        """Stop the server the way ``pg_ctl stop -m <mode>`` does; return once it is gone.

        ``fast`` ends every session (rolling back what they had not committed) and shuts
        down cleanly; ``immediate`` is a crash: the next start replays the WAL.
        """
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(_SIGNALS[mode])
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGQUIT)
            proc.wait(timeout=timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def destroy(self) -> None:
        """Stop the server (at once) and remove its directory."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
