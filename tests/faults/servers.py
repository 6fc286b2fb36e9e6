"""Redis and PostgreSQL servers of a fault test's own, on loopback ports, to stop and restart.

The machine's shared servers are never restarted: each test that needs an outage starts
its own instance here and stops it afterwards.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import unavailable


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, *, up: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                listening = True
        except OSError:
            listening = False
        if listening == up:
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} still {'closed' if up else 'open'} after {timeout} s")


@dataclass
class RedisServer:
    """A redis-server that keeps its data on disk (AOF, fsync always) across restarts."""

    folder: Path
    port: int = field(default_factory=free_port)
    options: list[str] = field(default_factory=list)
    """More redis-server arguments, e.g. ``["--aclfile", path]``."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL services connect to."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again) on the same port and data folder."""
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server (to start a Redis of the test's own)")
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder)]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", "", *self.options]
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        """Stop it cleanly (its AOF keeps every acknowledged write)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        _wait_port(self.port, up=False)


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of the test's own: initdb'd in a temporary folder, trust auth.

    The folder is made here, outside pytest's root-only temporary tree, because the
    server runs as the ``postgres`` user; :meth:`remove` deletes it.
    """

    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="busway-faults-pg-")))
    port: int = field(default_factory=free_port)
    _as_postgres: list[str] = field(default_factory=list)

    @property
    def admin_url(self) -> str:
        """The asyncpg URL of its ``postgres`` database."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as_postgres, *argv], check=True, capture_output=True)

    def init(self) -> None:
        """Create the cluster (as the ``postgres`` user when running as root)."""
        binaries = _postgres_bin()
        if binaries is None:
            unavailable("PostgreSQL's initdb and pg_ctl (to start a PostgreSQL of the test's own)")
            return
        self._bin = binaries
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        data = self.folder / "data"
        self._run(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        """Start (again) on the same port and data."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run(
            str(self._bin / "pg_ctl"), "-D", str(self.folder / "data"), "-o", options,
            "-l", str(self.folder / "postgres.log"), "-w", "start",
        )  # fmt: skip
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        """Stop it; ``fast`` ends open connections as a crash or a restart would."""
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        _wait_port(self.port, up=False)

    def remove(self) -> None:
        """Stop it if it runs, and delete its data."""
        if (self.folder / "data" / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
