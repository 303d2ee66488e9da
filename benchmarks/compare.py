"""Equal wall-clock budget, same folders, same split: (a) the blog's fixed recipe, (b) automl-img
search, (c) KerasTuner's Hyperband over the same search space.

    python benchmarks/compare.py [--data benchmarks/data/fashion-mnist-6k] [--budget 1200] [--only abc] [--work DIR]

(a) is the recipe's values (4-block CNN 32/32/32/64, relu/relu/elu/elu, dropout 0.4, dense 64; Adam
1e-3; batch 32; rotation 30, zoom 0.2, shifts 0.1, horizontal flip; 40 epochs, early stopping
after 10 epochs without a better val loss, best epoch kept; no class weights) at the images' native size,
trained by automl-img's trainer with every parameter fixed. (b) is `automl-img search --timeout BUDGET` with
its defaults, then `export-best` (the best trial, averaged with each of the next two that helps on val);
the best trial alone is also exported and scored, outside the budget, to show what the averaging adds. (c) is
keras_tuner.Hyperband (max_epochs 40, factor 3, early stopping patience 10) over the same space,
built by the same build functions: KerasTuner's own HyperParameters object is handed to
automl-img's space and architecture code. All three train on the same train split,
select on the same val split, and are scored once on the same test split. Runs one after the
other on an otherwise idle machine. "time to val accuracy X" is when the approach first had a
finished model scoring X on val. With --work, a run that stopped part-way continues in its work
folder: an approach whose study is already exported there is read back, not run again (its
clock then starts at its first trial, without the seconds before it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA, trial_test_scores, write_result

RECIPE = {
    "batch_size": 32,
    "learning_rate": 0.001,
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "rotation": 30.0,
    "zoom": 0.2,
    "width_shift": 0.1,
    "height_shift": 0.1,
    "horizontal_flip": "true",
    "activations": "recipe",
    "filters_1": 32,
    "filters_2": 32,
    "filters_3": 32,
    "filters_4": 64,
    "batch_norm": "false",
    "dropout": 0.4,
    "dense_units": 64,
    "erasing": 0.0,
    "convs_per_block": 1,
    "stem": "none",
    "head": "flatten",
}
SINGLE = "export-best-trial-alone"  # `export-best --ensemble 1`: what the averaging adds
THRESHOLDS = (0.80, 0.85, 0.87, 0.88, 0.89, 0.90, 0.91, 0.92, 0.93)


def cli(*args: str, work: Path) -> float:
    started = time.time()
    subprocess.run(
        [str(Path(sys.executable).parent / "automl-img"), *args], cwd=work, check=True, stdout=subprocess.DEVNULL
    )
    return time.time() - started


def study_figures(work: Path, study_name: str, started: float, seconds: float) -> dict:
    import optuna

    from automl_img.outputs.bundle import BundleManifest
    from automl_img.study.records import TrialRecord

    trials = optuna.load_study(study_name=study_name, storage=f"sqlite:///{work}/studies/automl-img.db").trials
    records = [TrialRecord.of(t) for t in trials]  # every trial, surplus ones included, as the counts always were
    bundle = BundleManifest.read(work / "studies" / study_name / "export")
    single = BundleManifest.read(work / "studies" / study_name / SINGLE)
    timeline, best = [], 0.0
    completed = sorted(
        ((t, r) for t, r in zip(trials, records) if r.state.name == "COMPLETE"),
        key=lambda pair: pair[0].datetime_complete,
    )
    for trial, record in completed:
        accuracy = record.val_scores["accuracy"]
        if accuracy > best:
            best = accuracy
            timeline.append([round(trial.datetime_complete.timestamp() - started, 1), round(accuracy, 4)])
    states = [r.state.name for r in records]
    first = records[0]  # a new study's trial 0 is every parameter's default: what the search started from
    return {
        "test_accuracy": bundle.test.accuracy,
        "val_accuracy": bundle.val_scores["accuracy"],
        "trials_completed": states.count("COMPLETE"),
        "trials_pruned": states.count("PRUNED"),
        "trials_failed": states.count("FAIL"),
        "seconds": round(seconds, 1),
        "best_so_far": timeline,
        "best_trial": bundle.trial,
        "trial_0_val_accuracy": (first.val_scores or {}).get("accuracy"),
        "trial_0_test_accuracy": trial_test_scores(work, study_name, 0)["test"] if first.weights else None,
        "trial_epochs": [[r.number, r.state.name, r.epochs, r.promoted_from, r.value] for r in records],
        "averaged_trials": [[m.trial, m.image_size] for m in bundle.members],
        "left_out_trials": bundle.left_out,
        "best_trial_alone_test_accuracy": single.test.accuracy,
        "best_trial_alone_val_accuracy": single.val_scores["accuracy"],
        "best_params": bundle.params,
    }


def run_study(args: list[str], study: str, work: Path) -> dict:
    """Search and export as a user would; read back instead when an earlier run already did both."""
    read_back = (work / "studies" / study / "export" / "bundle.json").exists()
    if read_back:
        import optuna

        trials = optuna.load_study(study_name=study, storage=f"sqlite:///{work}/studies/automl-img.db").trials
        started = min(t.datetime_start.timestamp() for t in trials)
        seconds = max(t.datetime_complete.timestamp() for t in trials if t.datetime_complete) - started
    else:
        started = time.time()
        seconds = cli(*args, work=work) + cli("export-best", "--study", study, work=work)
    if not (work / "studies" / study / SINGLE / "bundle.json").exists():  # for the record, outside the budget
        cli("export-best", "--study", study, "--ensemble", "1", "--out", f"studies/{study}/{SINGLE}", work=work)
    figures = study_figures(work, study, started, seconds)
    if read_back:
        figures["read_back_from_an_earlier_run"] = True
    return {"command": "automl-img " + " ".join(args), **figures}


def run_recipe(data: Path, budget: int, work: Path, image_size: int | None = None, seed: int = 0) -> dict:
    fixed = [f"-p{k}={v}" for k, v in RECIPE.items()] + ([f"-pimage_size={image_size}"] if image_size else [])
    fixed += ["--precision", "float32", "--class-weights", "off"]  # the recipe as the blog runs it
    return run_study(
        [
            "search",
            str(data),
            "--study",
            "recipe",
            "--trials",
            "1",
            "--epochs",
            "40",
            "--patience",
            "10",
            "--objective",
            "loss",
            "--timeout",
            str(budget),
            "--seed",
            str(seed),
            *fixed,
        ],
        "recipe",
        work,
    )


def run_automl(data: Path, budget: int, work: Path, study: str = "automl", *extra: str) -> dict:
    return run_study(
        ["search", str(data), "--study", study, "--trials", "100000", "--timeout", str(budget), *extra], study, work
    )


class BudgetSpent(BaseException):
    """Raised past the deadline to end KerasTuner's search (not an Exception, so it is not caught as a trial error)."""


def run_kerastuner(data: Path, budget: int, work: Path, split_of: str) -> dict:
    import keras_tuner as kt
    import optuna

    from automl_img.data import ImageCache, Split
    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.models import metrics, training
    from automl_img.models.families import Families
    from automl_img.space import sample_image_size, sample_training_params
    from automl_img.study.config import StudyConfig
    from automl_img.tf_runtime import keras

    config = StudyConfig.of(optuna.load_study(study_name=split_of, storage=f"sqlite:///{work}/studies/automl-img.db"))
    split = Split.load(work / "studies" / split_of / "split.json", root=data)
    cache = ImageCache(work / "studies" / "cache", split.image_set)
    sizes, labels, classes = config.image_sizes, split.image_set.labels, len(config.class_names)
    arrays = {size: cache.load(size, config.channels).images for size in sizes}
    train_rows, val_rows, test_rows = (split.indices(p) for p in ("train", "val", "test"))
    deadline = time.time() + budget
    finished: list[tuple[float, float]] = []
    started = time.time()

    class Deadline(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.best = 0.0
            if time.time() >= deadline:
                raise BudgetSpent

        def on_epoch_end(self, epoch, logs=None):
            self.best = max(self.best, (logs or {}).get("val_accuracy", 0.0))
            if time.time() >= deadline:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            finished.append((time.time() - started, self.best))

    class SameSpace(kt.HyperModel):
        def build(self, hp):
            model, params = training.build_for_trial(
                Families.single(build_blog_cnn, sizes), hp, config.channels, classes
            )
            model.compile(
                optimizer=keras.optimizers.Adam(params.learning_rate),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
            return model

        def fit(self, hp, model, *args, **kwargs):
            params = sample_training_params(hp, sample_image_size(hp, sizes))
            images = arrays[params.image_size]
            train = training.batches(images, labels, train_rows, params.batch_size, params, shuffle_seed=0)
            val = training.batches(images, labels, val_rows, 256)
            return model.fit(train, validation_data=val, verbose=0, shuffle=False, **kwargs)

    tuner = kt.Hyperband(
        SameSpace(),
        objective="val_accuracy",
        max_epochs=40,
        factor=3,
        seed=0,
        directory=str(work / "kerastuner"),
        project_name="same-space",
        overwrite=True,
    )
    with contextlib.suppress(BudgetSpent):
        tuner.search(callbacks=[keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=10), Deadline()])
    best_hp = tuner.get_best_hyperparameters(1)[0]
    model = tuner.get_best_models(1)[0]
    images = arrays[best_hp["image_size"]]
    test = metrics.scores(labels[test_rows], training.predict(model, images, test_rows))
    val = metrics.scores(labels[val_rows], training.predict(model, images, val_rows))
    timeline, best = [], 0.0
    for moment, accuracy in finished:
        if accuracy > best:
            best = accuracy
            timeline.append([round(moment, 1), round(accuracy, 4)])
    return {
        "command": "keras_tuner.Hyperband(max_epochs=40, factor=3), see benchmarks/compare.py",
        "test_accuracy": test["accuracy"],
        "val_accuracy": val["accuracy"],
        "trials_completed": len(finished),
        "trials_pruned": 0,
        "trials_failed": 0,
        "seconds": round(time.time() - started, 1),
        "best_so_far": timeline,
        "best_params": dict(best_hp.values),
    }


def time_to(timeline: list[list[float]]) -> dict[str, float | None]:
    return {f"{t:.2f}": next((moment for moment, value in timeline if value >= t), None) for t in THRESHOLDS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "fashion-mnist-6k")
    parser.add_argument("--budget", type=int, default=1200, help="seconds per approach")
    parser.add_argument("--only", default="abc", help="which of a (recipe), b (automl-img), c (KerasTuner)")
    parser.add_argument("--work", type=Path, help="continue in this work folder of an earlier run")
    parser.add_argument("--recipe-size", type=int, help="the recipe's image size (default: the images' own)")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the runs (another seed: another run)")
    args = parser.parse_args()
    work = args.work.resolve() if args.work else Path(tempfile.mkdtemp(prefix="compare-"))
    work.mkdir(parents=True, exist_ok=True)
    data = args.data.resolve()
    os.environ.pop("AUTOML_IMG_STORAGE", None)
    results = {}
    if "a" in args.only:
        results["recipe"] = run_recipe(data, args.budget, work, args.recipe_size, args.seed)
        print("recipe", results["recipe"]["test_accuracy"], flush=True)
    if "b" in args.only:
        results["automl_img"] = run_automl(data, args.budget, work, "automl", "--seed", str(args.seed))
        print("automl-img", results["automl_img"]["test_accuracy"], flush=True)
    if "c" in args.only:
        split_of = "automl" if "b" in args.only else "recipe"
        os.chdir(work)
        results["kerastuner_hyperband"] = run_kerastuner(data, args.budget, work, split_of)
        print("kerastuner", results["kerastuner_hyperband"]["test_accuracy"], flush=True)
    for figures in results.values():
        figures["time_to_val_accuracy_seconds"] = time_to(figures["best_so_far"])
    if "automl_img" in results:
        ours = results["automl_img"]["test_accuracy"]
        results["automl_img_test_accuracy_minus"] = {
            name: round(ours - figures["test_accuracy"], 4)
            for name, figures in results.items()
            if isinstance(figures, dict) and "test_accuracy" in figures and name != "automl_img"
        }
    only = "" if sorted(args.only) == ["a", "b", "c"] else f"-only-{args.only}"  # a part never replaces a whole run
    seed = f"-seed{args.seed}" if args.seed else ""
    write_result(
        f"compare-{data.name}-{args.budget}s{only}{seed}", {"data": str(data), "budget_seconds": args.budget, **results}
    )


if __name__ == "__main__":
    main()
