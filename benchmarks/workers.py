"""Several workers on one study: SQLite vs a journal file (one machine) and PostgreSQL (many machines),
and one search running several trials at once (``--workers``) against the same search one trial at a time.

    python benchmarks/workers.py [--workers 3] [--trials 9]

Each variant starts WORKERS `automl-img search` processes at once on the digits (8 px, 2 epochs per
trial) against one study and storage, or one process with ``--workers WORKERS`` (and ``--workers 1``,
the baseline), waits, then counts: finished trials (must equal TRIALS), failed or still-running ones,
duplicated trial numbers, surplus trials given back, storage errors in the output, and the wall time.
PostgreSQL runs on a throwaway local server (tests/pg_server.py), so this measures coordination, not a
network.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from _common import HERE, write_result

sys.path.insert(0, str(HERE.parent / "tests"))
from pg_server import postgres_server

from automl_img.default_plugins.digits import write_digits
from automl_img.study.records import TrialRecord


def run_variant(
    name: str, storage: str, opened, digits: Path, workers: int, trials: int, work: Path, in_one_search: bool = False
) -> dict:
    command = [
        sys.executable,
        "-m",
        "automl_img",
        "search",
        str(digits),
        "--study",
        name,
        "--storage",
        storage,
        "--trials",
        str(trials),
        "--epochs",
        "2",
        "-p",
        "image_size=8",
    ]
    command += ["--workers", str(workers)] if in_one_search else []
    started = time.time()
    processes = [
        subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(1 if in_one_search else workers)
    ]
    outputs = [p.communicate()[0] for p in processes]
    seconds = time.time() - started
    study = optuna.load_study(study_name=name, storage=opened)
    records = [TrialRecord.of(t) for t in study.trials]  # surplus ones included: they are counted below
    states = [r.state.name for r in records if not r.surplus]
    errors = sum(o.count("database is locked") + o.count("Traceback") for o in outputs)
    return {
        "workers": workers,
        "in_one_search": in_one_search,
        "trials_asked": trials,
        "wall_seconds": round(seconds, 1),
        "finished": states.count("COMPLETE") + states.count("PRUNED"),
        "failed": states.count("FAIL"),
        "left_running": states.count("RUNNING"),
        "duplicated_numbers": len(records) - len({r.number for r in records}),
        "surplus_given_back": sum(r.surplus for r in records),
        "trials_per_worker": sorted(
            sum(r.worker is not None and r.worker.search_pid == p.pid for r in records) for p in processes
        ),
        "worker_exit_codes": [p.returncode for p in processes],
        "storage_errors_in_output": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--trials", type=int, default=9)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="workers-"))
    digits = write_digits(work / "digits")
    journal = str(work / "studies" / "journal.log")
    sqlite = f"sqlite:///{work}/studies/parallel.db"
    figures = {
        "sqlite": run_variant("sqlite", sqlite, sqlite, digits, args.workers, args.trials, work),
        "journal_file": run_variant(
            "journal",
            journal,
            optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal)),
            digits,
            args.workers,
            args.trials,
            work,
        ),
    }
    for count in (1, args.workers):  # one search process: one trial at a time, then --workers at once
        figures[f"one_search_workers_{count}"] = run_variant(
            f"one-search-{count}", sqlite, sqlite, digits, count, args.trials, work, in_one_search=True
        )
    with postgres_server("benchmark-password") as url:
        figures["postgresql"] = run_variant("postgres", url, url, digits, args.workers, args.trials, work)
    for name, result in figures.items():
        print(name, result, flush=True)
    write_result("workers", figures)


if __name__ == "__main__":
    main()
