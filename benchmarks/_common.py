"""Shared by the benchmark scripts: where data and results live, and the JSON they write."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as cpuinfo:
        cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_gb, 1),
        "python": platform.python_version(),
        **{name: _version(name) for name in ("tensorflow", "keras", "optuna")},
    }


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def write_result(name: str, figures: dict) -> Path:
    """Write RESULTS/<name>.json with the figures, the command that produced them and the machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    path.write_text(
        json.dumps(
            {
                "benchmark": name,
                "command": command,
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "machine": machine(),
                "figures": figures,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {path}")
    return path


def resident_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


def peak_resident_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))


def trial_test_scores(work: Path, study_name: str, number: int) -> dict[str, float]:
    """One trial's own checkpoint, alone, scored on the study's val and test splits (what trial 0 alone,
    the hand-set defaults, would have given)."""
    os.environ["AUTOML_IMG_STUDIES"] = str(work / "studies")
    from automl_img.models import training
    from automl_img.models.metrics import scores
    from automl_img.plugins import PluginSource
    from automl_img.space import StoredHyperParameters
    from automl_img.study.handle import StoredStudy

    stored = StoredStudy.open(study_name, f"sqlite:///{work}/studies/automl-img.db")
    registry = PluginSource().load()
    trial = next(t for t in stored.trials() if t.number == number)
    data = stored.open_data(registry)
    model, params = training.build_for_trial(
        stored.config.families(registry),
        StoredHyperParameters(trial.params),
        stored.config.channels,
        len(stored.config.class_names),
    )
    size = params.image_size
    model.load_weights(stored.weights_file(trial))
    model = training.as_trained(model, params)
    decoded = data.cache.load(size, stored.config.channels)
    return {
        part: scores(data.labels[rows], training.predict(model, decoded.images, rows))["accuracy"]
        for part in ("val", "test")
        for rows in [data.rows(part, decoded)]
    }
