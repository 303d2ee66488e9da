"""Resident memory across a search: trials in the search process vs one child process per trial.

    python benchmarks/trial_memory.py [--trials 30] [--epochs 2]

Both variants run the same Objective on the Fashion-MNIST 6k subset (write it first with
benchmarks/fashion_mnist.py). In-process: the best hygiene available (keras clear_session + gc
after every trial). Child: automl-img's search loop. Also reports the seconds each trial spends
outside training in child mode (process start, TensorFlow import, model build, checkpoint).
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time

import optuna
from _common import DATA, resident_mb, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="trial-memory-"))

    from automl_img.plugins import load_plugins
    from automl_img.searching.options import SearchOptions
    from automl_img.searching.plan import TrialSpec
    from automl_img.searching.progress import SearchListener
    from automl_img.searching.run import prepare_study, run_search
    from automl_img.searching.samplers import make_pruner, make_sampler
    from automl_img.searching.trial import Objective
    from automl_img.study.records import trial_records

    registry = load_plugins([])
    source = str(DATA / "fashion-mnist-6k")
    fixed = {"image_size": 28}
    in_process_rss = []
    options = SearchOptions(
        source=source, study="in-process", trials=args.trials, epochs=args.epochs, seed=0, overrides=fixed
    )
    stored, data = prepare_study(options, registry)
    study = stored.study
    study.sampler, study.pruner = make_sampler("tpe", 0), make_pruner("median")
    spec = TrialSpec(options, stored.name, stored.config, data, registry.plugin_source)
    objective = Objective(spec, registry.architecture("blog-cnn"), lambda event: None)
    started = time.time()
    for _ in range(args.trials):
        study.optimize(objective, n_trials=1)
        from automl_img.tf_runtime import keras

        keras.backend.clear_session()
        gc.collect()
        in_process_rss.append(round(resident_mb(), 1))
    in_process_seconds = time.time() - started

    class Recorder(SearchListener):
        def __init__(self):
            self.parent_rss, self.ended = [], []

        def trial_finished(self, trial):
            self.parent_rss.append(round(resident_mb(), 1))
            self.ended.append(time.time())

    recorder = Recorder()
    started = time.time()
    summary = run_search(
        SearchOptions(source=source, study="child", trials=args.trials, epochs=args.epochs, seed=0, overrides=fixed),
        registry,
        recorder,
    )
    child_seconds = time.time() - started
    trials = trial_records(optuna.load_study(study_name="child", storage=study._storage))
    wall = [end - start for start, end in zip([started] + recorder.ended[:-1], recorder.ended)]
    overhead = [w - (t.seconds or 0) for w, t in zip(wall, trials)]
    child_rss = [t.resident_mb for t in trials]
    write_result(
        "trial_memory",
        {
            "trials": args.trials,
            "epochs_per_trial": args.epochs,
            "data": "fashion-mnist-6k at 28 px",
            "in_process": {
                "resident_mb_after_each_trial": in_process_rss,
                "growth_mb_trial_3_to_last": round(in_process_rss[-1] - in_process_rss[2], 1),
                "seconds": round(in_process_seconds, 1),
            },
            "child_process": {
                "parent_resident_mb_after_each_trial": recorder.parent_rss,
                "parent_growth_mb_trial_3_to_last": round(recorder.parent_rss[-1] - recorder.parent_rss[2], 1),
                "child_resident_mb_at_trial_end": child_rss,
                "seconds": round(child_seconds, 1),
                "overhead_seconds_per_trial_median": round(sorted(overhead)[len(overhead) // 2], 2),
                "completed": summary.counts.completed,
                "pruned": summary.counts.pruned,
            },
        },
    )


if __name__ == "__main__":
    main()
