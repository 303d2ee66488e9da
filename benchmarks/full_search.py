"""One real search against a time budget: what a user gets, and what it costs the machine.

    python benchmarks/full_search.py [--data benchmarks/data/fashion-mnist] [--timeout 3600] [--architecture NAME]

Runs `automl-img search DATA --timeout T --seed 0` and `automl-img export-best` as a user would,
sampling the resident memory of the search process and its trial processes every second. Reports
the exported model's test accuracy, trials completed/pruned/failed, wall time, the peak resident
memory of the whole process tree (search + trial process), and the seconds between trials spent
outside training (process start, TensorFlow import, checkpointing).
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
from _common import DATA, trial_test_scores, write_result

from automl_img.outputs.bundle import BundleManifest
from automl_img.study.records import TrialRecord


def tree_resident_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
            with open(f"/proc/{current}/task/{current}/children") as children:
                pending += [int(child) for child in children.read().split()]
        except (OSError, StopIteration):
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "fashion-mnist")
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--architecture", default="blog-cnn")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="full-search-"))
    cli = str(Path(sys.executable).parent / "automl-img")
    command = [
        cli,
        "search",
        str(args.data.resolve()),
        "--study",
        "full",
        "--trials",
        "100000",
        "--timeout",
        str(args.timeout),
        "--seed",
        "0",
        "--quiet",
        "--architecture",
        args.architecture,
    ]
    started = time.time()
    search = subprocess.Popen(command, cwd=work)
    peak = [0.0]

    def sample() -> None:
        while search.poll() is None:
            peak[0] = max(peak[0], tree_resident_mb(search.pid))
            time.sleep(1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    search.wait()
    search_seconds = time.time() - started
    sampler.join()
    subprocess.run([cli, "export-best", "--study", "full"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    total_seconds = time.time() - started
    single = work / "studies" / "full" / "best-trial-alone"  # for the record: what the averaging adds
    subprocess.run(
        [cli, "export-best", "--study", "full", "--ensemble", "1", "--out", str(single)],
        cwd=work,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    bundle, alone = BundleManifest.read(work / "studies" / "full" / "export"), BundleManifest.read(single)
    trials = optuna.load_study(study_name="full", storage=f"sqlite:///{work}/studies/automl-img.db").trials
    records = [TrialRecord.of(t) for t in trials]  # every trial, surplus ones included, as the counts always were
    states = [r.state.name for r in records]
    ended = sorted((t.datetime_complete.timestamp(), t) for t in trials if t.datetime_complete)
    gaps = [
        later.datetime_start.timestamp() - earlier_end for (earlier_end, _), (_, later) in itertools.pairwise(ended)
    ]
    outside = [
        (t.datetime_complete - t.datetime_start).total_seconds() - r.seconds
        for t, r in zip(trials, records)
        if t.datetime_complete and r.seconds is not None
    ]
    suffix = "" if args.architecture == "blog-cnn" else f"-{args.architecture}"
    write_result(
        f"full_search-{args.data.name}-{args.timeout}s{suffix}",
        {
            "command": " ".join(["automl-img", *command[1:]]),
            "test_accuracy": bundle.test.accuracy,
            "test_images": bundle.test.images,
            "val_accuracy": bundle.val_scores["accuracy"],
            "best_trial": bundle.trial,
            "averaged_trials": [member.trial for member in bundle.members],
            "left_out_trials": bundle.left_out,
            "best_trial_alone_test_accuracy": alone.test.accuracy,
            "best_trial_alone_val_accuracy": alone.val_scores["accuracy"],
            "trial_0_val_accuracy": (records[0].val_scores or {}).get("accuracy"),
            "trial_0_test_accuracy": trial_test_scores(work, "full", 0)["test"] if records[0].weights else None,
            "best_params": bundle.params,
            "trials_completed": states.count("COMPLETE"),
            "trials_pruned": states.count("PRUNED"),
            "trials_failed": states.count("FAIL"),
            "seconds_to_first_model": round(
                min(t.datetime_complete.timestamp() for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
                - started,
                1,
            ),
            "search_seconds": round(search_seconds, 1),
            "search_and_export_seconds": round(total_seconds, 1),
            "peak_resident_mb_search_and_trial_process": round(peak[0], 1),
            "median_seconds_between_trials": round(sorted(gaps)[len(gaps) // 2], 2) if gaps else None,
            "median_seconds_per_trial_outside_training": round(sorted(outside)[len(outside) // 2], 2)
            if outside
            else None,
            "trials": [
                {
                    "number": r.number,
                    "state": r.state.name,
                    "value": r.value,
                    "seconds": r.seconds,
                    "epochs": r.epochs_run,
                    "planned_epochs": r.epochs,
                    "promoted_from": r.promoted_from,
                    "train_images": r.train_images,
                    "stopped_by": r.stopped_by,
                    "architecture": r.params.get("architecture"),  # in a study of several
                    "image_size": next((v for k, v in r.params.items() if k.startswith("image_size")), None),
                    "fine_tune_share": r.params.get("fine_tune_share"),
                }
                for r in records
            ],
        },
    )


if __name__ == "__main__":
    main()
