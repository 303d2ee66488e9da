"""Where studies live: storage URLs (SQLite by default, PostgreSQL for many machines, journal files)."""

from __future__ import annotations

import os
import random
import re
import time
import warnings
from pathlib import Path

import optuna

from automl_img.errors import StudyError

STORAGE_ENV = "AUTOML_IMG_STORAGE"  # the storage URL when none is given
STUDIES_ENV = "AUTOML_IMG_STUDIES"  # the folder for the default storage and every study's artifacts
DEFAULT_DB = "automl-img.db"
HEARTBEAT_SECONDS = 30  # a worker that misses this beat for GRACE_SECONDS is presumed dead
GRACE_SECONDS = 120
_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


def studies_dir() -> Path:
    return Path(os.environ.get(STUDIES_ENV, "studies"))


def default_storage_url() -> str:
    return f"sqlite:///{studies_dir() / DEFAULT_DB}"


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for every message and log line."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(url: str | None = None) -> optuna.storages.BaseStorage:
    """Open (creating when needed) an Optuna storage from a URL or a journal-file path."""
    url = url or default_storage_url()
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if url.endswith((".log", ".journal")) and scheme in ("", "file"):
        return _journal(Path(url.split("://", 1)[-1]))
    if scheme not in _RDB_SCHEMES:
        raise StudyError(
            f"unknown storage {redact(url)!r}; use sqlite:///PATH.db, postgresql://USER:PASSWORD@HOST/DB "
            "or a journal file PATH.log"
        )
    if scheme == "sqlite":
        database = url.split(":///", 1)[-1]
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    driver_url = url
    if scheme in ("postgresql", "postgres") and url.split("://", 1)[0] in ("postgresql", "postgres"):
        # The psycopg 3 driver, named explicitly: SQLAlchemy's default for a bare postgresql:// differs
        # between versions (psycopg2 before 2.1).
        driver_url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        return _rdb(driver_url, scheme)
    except ImportError as exc:
        missing = getattr(exc.__cause__, "name", None) or exc.name or "its driver"
        raise StudyError(
            f"cannot open {scheme} storage: {missing} is not installed; pip install 'automl-img[postgres]'"
        ) from None
    except Exception as exc:  # noqa: BLE001 - connection refused, bad credentials, unreadable file...
        message = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
        raise StudyError(f"cannot open storage {redact(url)}: {message}") from None


def _rdb(url: str, scheme: str) -> optuna.storages.RDBStorage:
    engine_kwargs = {"connect_args": {"timeout": 60}} if scheme == "sqlite" else {"pool_pre_ping": True}
    for attempt in range(1, 6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS
                )
        except Exception as exc:
            # Workers started together on an empty database all create Optuna's tables at once;
            # the losers of that race see a duplicate-key error (PostgreSQL's or SQLite's wording)
            # and simply open it again.
            if attempt == 5 or not any(s in str(exc) for s in ("duplicate key", "already exists", "UNIQUE constraint")):
                raise
            time.sleep(random.uniform(0.2, 1.0) * attempt)
    raise AssertionError("unreachable")


def _journal(path: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    path.expanduser().parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path.expanduser())))


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return sorted(study.study_name for study in storage.get_all_studies())


def load_study(storage: optuna.storages.BaseStorage, name: str | None, url: str | None = None) -> optuna.Study:
    """The named study, or the only one in the storage; a clear message otherwise."""
    names = study_names(storage)
    where = redact(url or default_storage_url())
    if name is None:
        if len(names) == 1:
            name = names[0]
        elif not names:
            raise StudyError(f"no study in {where}; run `automl-img search DATA_DIR` first")
        else:
            raise StudyError(f"{where} holds several studies ({', '.join(names)}); choose one with --study")
    if name not in names:
        known = ", ".join(names) or "none"
        raise StudyError(f"no study named {name!r} in {where} (studies there: {known})")
    return optuna.load_study(study_name=name, storage=storage)
