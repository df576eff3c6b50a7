"""A PostgreSQL server of the test's own (Debian's binaries, a cluster in a temporary folder, its
own port), so that a test may crash it without touching the machine's shared server."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.processes import free_port


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL's server binaries are missing (Debian: postgresql)")
    return found[-1].parent


@dataclass
class PrivatePostgres:
    """A running cluster: `url` reaches its `gateway` database as `postgres` (trust)."""

    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/gateway"

    def crash(self) -> None:
        """An immediate stop: no checkpoint, and what the WAL buffers held is lost, as in a
        crash of the server."""
        self._pg_ctl("stop", "-m", "immediate")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        self._pg_ctl("start", "-w", "-o", options, "-l", str(self.data / "server.log"))

    def _pg_ctl(self, *args: str) -> None:
        _as_postgres([str(_bin_dir() / "pg_ctl"), "-D", str(self.data), *args])


def _as_postgres(command: list[str], *, check: bool = True) -> None:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=check, capture_output=True, timeout=60)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """Start a fresh cluster with an empty `gateway` database; stop it and remove it after."""
    folder = Path(tempfile.mkdtemp(prefix="sgw-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    _as_postgres([str(_bin_dir() / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"])
    server = PrivatePostgres(data=data, port=free_port())
    try:
        server.start()
        createdb = [str(_bin_dir() / "createdb"), "-h", "127.0.0.1", "-p", str(server.port)]
        _as_postgres([*createdb, "-U", "postgres", "gateway"])
        yield server
    finally:
        _as_postgres(
            [str(_bin_dir() / "pg_ctl"), "-D", str(data), "stop", "-m", "fast"], check=False
        )
        shutil.rmtree(folder, ignore_errors=True)
