"""The typed records at the boundaries: trial attributes, the study's owner, the search's options, the bundle."""

from __future__ import annotations

import dataclasses
import os
import re
import threading

import optuna
import pytest
from helpers import run

from automl_img.errors import AutomlImgError, StudyError
from automl_img.models.metrics import report
from automl_img.outputs.bundle import BundleManifest, FormatCheck, Member, Preprocessing
from automl_img.searching.options import SearchOptions
from automl_img.space import Range
from automl_img.study import records
from automl_img.study.config import StudyConfig
from automl_img.study.handle import stored_config
from automl_img.study.records import EpochRow, TrialRecord, Worker, trial_records
from automl_img.study.storage import default_storage_url


def test_trial_record_reads_back_what_a_trial_wrote_and_refuses_unknown_fields():
    study = optuna.create_study(direction="maximize")
    trial = study.ask({"image_size": optuna.distributions.CategoricalDistribution([8, 16])})
    records.write(
        trial,
        worker=Worker.this_process(search_pid=os.getppid()),
        seed=3,
        history=[EpochRow(1, 0.7, {"accuracy": 0.5, "loss": 0.7})],
        best_epoch=1,
        val_scores={"accuracy": 0.5},
        weights="trials/0/best.weights.h5",
    )
    with pytest.raises(TypeError, match="no stored field 'weigths'"):
        records.write(trial, weigths="typo")
    study.tell(trial, 0.5)
    surplus = study.ask()
    records.write(surplus, surplus=True)
    study.tell(surplus, state=optuna.trial.TrialState.FAIL)

    (record,) = trial_records(study)  # the surplus trial never ran: left out
    assert record.number == 0 and record.value == 0.5 and record.params == {"image_size": trial.params["image_size"]}
    assert record.seed == 3 and record.best_epoch == 1 and record.epochs_run == 1 and record.finished
    assert record.history == [EpochRow(1, 0.7, {"accuracy": 0.5, "loss": 0.7})]  # stored flat, as before
    assert study.trials[0].user_attrs["history"] == [
        {"epoch": 1, "train_loss": 0.7, "val_accuracy": 0.5, "val_loss": 0.7}
    ]
    assert record.worker == Worker.this_process(search_pid=os.getppid()) and not record.worker.ended_on_this_machine()
    assert TrialRecord.of(study.trials[1]).surplus


def test_a_worker_whose_process_is_gone_is_recognised():
    # this pid, but another process's start
    gone = dataclasses.replace(Worker.this_process(search_pid=os.getppid()), pid_started="0")
    assert gone.ended_on_this_machine()
    elsewhere = dataclasses.replace(gone, host="another-machine")
    assert not elsewhere.ended_on_this_machine()  # Optuna's heartbeat judges other machines


def test_every_search_option_is_in_the_recorded_command_with_a_real_flag():
    changed = SearchOptions(
        source="data",
        dataset="csv",
        architecture="small-resnet",
        study="s",
        trials=7,
        timeout=60.0,
        epochs=3,
        patience=2,
        trial_timeout=30.0,
        max_failures=2,
        seed=4,
        objective="loss",
        ordinal=True,
        class_order="none,mild,severe",
        exclude="audit/exclusions.txt",
        sampler="random",
        pruner="none",
        class_weights="on",
        workers=2,
        precision="bfloat16",
        overrides={"dropout": Range(0.1, 0.2), "image_size": [8, 16], "batch_norm": False},
        artifacts="s3://trials",
        storage="postgresql://user:secret@db/automl",
    )
    unchanged = [f.name for f in dataclasses.fields(SearchOptions) if getattr(changed, f.name) == f.default]
    assert unchanged == [], "give every option a non-default value here"
    command = changed.as_command()
    assert command.startswith("automl-img search data ") and "secret" not in command
    assert "-p dropout=0.1..0.2 -p image_size=8,16 -p batch_norm=false" in command
    assert " --ordinal --class-order none,mild,severe " in command  # a switch is its flag alone
    help_text = run("search", "--help").output
    flags = re.findall(r"(?<= )(--[a-z-]+|-p)(?= )", command)
    assert len(flags) == len(dataclasses.fields(SearchOptions)) - 1 + 2  # source is the argument; -p thrice
    for flag in set(flags):
        assert flag in help_text, f"{flag} is recorded but `automl-img search` has no such option"
    assert SearchOptions(source="data").as_command() == "automl-img search data"


def test_bundle_manifest_survives_json_and_predict_needs_only_three_fields(tmp_path):
    import numpy as np

    test = report(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), ["cat", "dog"])
    manifest = BundleManifest(
        model="model.keras",
        class_names=["cat", "dog"],
        preprocessing=Preprocessing(8, 1),
        members=[Member(3, 0.9, 8, 2, {"image_size": 8})],
        test=test,
        formats={"keras": FormatCheck("model.keras", 10, 3, 0.0, 1.0, True)},
    )
    manifest.write(tmp_path)
    again = BundleManifest.read(tmp_path)
    assert again == manifest and again.test.per_class["dog"].recall == 0.5 and again.test.accuracy == 2 / 3
    (tmp_path / "bundle.json").write_text(
        '{"model": "m.keras", "class_names": ["a", "b"], "preprocessing": {"image_size": 8, "channels": 1}}'
    )
    minimal = BundleManifest.read(tmp_path)
    assert (minimal.image_size, minimal.channels, minimal.members, minimal.test) == (8, 1, [], None)
    (tmp_path / "bundle.json").write_text('{"class_names": ["a"]}')
    with pytest.raises(AutomlImgError, match="not a bundle manifest this version can read"):
        BundleManifest.read(tmp_path)
    with pytest.raises(AutomlImgError, match=r"no bundle\.json"):
        BundleManifest.read(tmp_path / "elsewhere")


def test_a_study_another_program_made_is_refused_in_one_line(workdir, digits_dir):
    (workdir / "studies").mkdir()
    optuna.create_study(study_name="digits", storage=default_storage_url())
    for command in (
        ("search", digits_dir, "--trials", 1),
        ("export-best", "--study", "digits"),
        ("show", "digits"),
        ("report", "digits"),
    ):
        result = run(*command, expect=1)
        assert "was not made by automl-img search" in result.output and "Traceback" not in result.output, command


def test_a_worker_waits_for_the_configuration_of_a_study_created_at_the_same_moment(tmp_path):
    """Workers started together: one creates the study, then stores its configuration; another that finds the study
    in between waits for it instead of calling the study foreign."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    created = optuna.create_study(study_name="together", storage=storage)
    config = StudyConfig("folder", None, "blog-cnn", "accuracy", 1, [8], 0, "hash", ["a", "b"])
    with pytest.raises(StudyError, match="not made by automl-img search"):
        stored_config(optuna.load_study(study_name="together", storage=storage))
    threading.Timer(1.0, config.save, [created]).start()
    assert stored_config(optuna.load_study(study_name="together", storage=storage), wait=20) == config
