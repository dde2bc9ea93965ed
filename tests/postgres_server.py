"""A throw-away PostgreSQL server for tests and benchmarks: Debian's binaries, a temporary
folder, a unix socket in it (no TCP port), stopped and deleted on exit.

PostgreSQL refuses to run as root (CI runs as root): then the server runs as the
`postgres` user through runuser, in a folder handed to that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import sqlalchemy as sa

TIMEOUT = 60


def postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb in it, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda path: int(Path(path).parts[-3]))
    return Path(found[-1]).parent if found else None


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def running_postgresql(durable: bool = False):
    """Start a server; yield its admin URL (postgresql://postgres@/postgres?host=<socket dir>).
    On exit: stop it (fast shutdown) and delete its folder. Not `durable`: fsync off (a test
    server's data need not survive a power cut, and tests run faster)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="mnist-digits-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        server_user = pwd.getpwnam("postgres")
        os.chown(folder, server_user.pw_uid, server_user.pw_gid)
    try:
        subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                                        "-A", "trust", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, timeout=TIMEOUT)
        # No TCP at all (listen_addresses empty), only the socket in our folder.
        options = f"-k {folder} -c listen_addresses= -c fsync={'on' if durable else 'off'}"
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                                        "-l", str(folder / "server.log"), "-w", "-t", str(TIMEOUT),
                                        "start"]),
                       check=True, capture_output=True, timeout=TIMEOUT + 10)
        try:
            yield f"postgresql://postgres@/postgres?host={folder}"
        finally:
            subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast",
                                            "-w", "stop"]),
                           check=True, capture_output=True, timeout=TIMEOUT)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(admin_url: str, name: str):
    """A new empty database on the server; yields its URL; dropped on exit."""
    engine = sa.create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://", 1),
                              isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield admin_url.replace("/postgres?", f"/{name}?", 1)
        with engine.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        engine.dispose()
