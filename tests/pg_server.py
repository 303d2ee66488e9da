"""A throwaway PostgreSQL server on loopback for the distributed tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class PostgresUnavailable(Exception):
    """The server binaries are missing and could not be installed."""


def _bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@contextlib.contextmanager
def postgres_server(password: str) -> Iterator[str]:
    """Start a fresh cluster (apt-get installing PostgreSQL if needed); yield its URL; stop and delete it."""
    if _bindir() is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "postgresql"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    bindir = _bindir()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL server binaries not found; install the postgresql package (.ci/run does)")
    # The server refuses to run as root: as root, run it as the package's postgres user.
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    home = Path(tempfile.mkdtemp(prefix="automl-img-pg-"))
    password_file = home / "password"
    password_file.write_text(password + "\n")
    if as_postgres:
        shutil.chown(home, "postgres")
        shutil.chown(password_file, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = home / "data"
    pg_ctl = [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [
            *as_postgres,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "automl",
            "--pwfile",
            str(password_file),
            "--auth",
            "scram-sha-256",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [
            *pg_ctl,
            "-l",
            str(home / "server.log"),
            "-w",
            "start",
            "-o",
            f"-p {port} -k {home} -c listen_addresses=127.0.0.1",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "automl", "automl_img"],
            check=True,
            env={**os.environ, "PGPASSWORD": password},
        )
        yield f"postgresql://automl:{password}@127.0.0.1:{port}/automl_img"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], stdout=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)
