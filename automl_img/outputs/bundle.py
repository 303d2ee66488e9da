"""The bundle's manifest (``bundle.json``): what export-best writes and predict, report and the CLI read."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from automl_img.errors import AutomlImgError
from automl_img.models.metrics import TestReport
from automl_img.outputs.calibration import Calibration

BUNDLE_FORMAT = 1
BUNDLE_FILE = "bundle.json"
TEST_PREDICTIONS_FILE = "test_predictions.csv"  # one row per test image: what the report's mistakes come from
_TEST_PREDICTION_COLUMNS = ("path", "true_class", "predicted_class", "probability", "prediction_set")


@dataclass(frozen=True)
class TestPrediction:
    """One test image's prediction, as the bundle keeps it."""

    __test__ = False  # not a pytest class, whatever its name

    path: str
    true_class: str
    predicted_class: str
    probability: float  #: of the predicted class, calibrated
    prediction_set: str = ""  #: the classes its prediction set holds (``calibration.set_text``)

    @property
    def wrong(self) -> bool:
        return self.true_class != self.predicted_class


def write_test_predictions(folder: Path, predictions: list[TestPrediction]) -> None:
    with open(folder / TEST_PREDICTIONS_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(_TEST_PREDICTION_COLUMNS)
        writer.writerows(
            [p.path, p.true_class, p.predicted_class, f"{p.probability:.6f}", p.prediction_set] for p in predictions
        )


def read_test_predictions(folder: Path) -> list[TestPrediction]:
    with open(folder / TEST_PREDICTIONS_FILE, newline="", encoding="utf-8") as handle:
        return [
            TestPrediction(
                row["path"],
                row["true_class"],
                row["predicted_class"],
                float(row["probability"]),
                row.get("prediction_set", ""),
            )
            for row in csv.DictReader(handle)
        ]


@dataclass(frozen=True)
class Preprocessing:
    """What the model expects: uint8 images of this size and channel count; the rest is said for people."""

    image_size: int
    channels: int
    color: str = ""
    input: str = ""
    scaling: str = ""
    resize: str = ""
    decode: int = 1  #: ``DECODE_VERSION`` of the pixels it was trained on (bundles before DICOM: 1)
    windowing: str = ""


@dataclass(frozen=True)
class Member:
    """One averaged trial."""

    trial: int
    value: float  #: its val score in the search
    image_size: int
    best_epoch: int | None
    params: dict[str, Any]
    #: what it trained in (bfloat16 or float16: mixed precision); every exported model computes in float32
    trained_precision: str = "float32"


@dataclass(frozen=True)
class FormatCheck:
    """One exported format, checked against the Keras model on the test split."""

    file: str
    bytes: int
    checked_on_test_images: int
    max_abs_probability_difference: float
    same_class_fraction: float
    ok: bool  #: exact formats: same classes, probabilities within 1e-3; quantised: accuracy within 1 point
    test_accuracy: float | None = None
    quantized: bool = False  #: weights and activations in 8 bits, calibrated on training images


@dataclass(frozen=True)
class DatasetRecord:
    loader: str
    source: str | None
    split_hash: str
    split: dict[str, int]  #: readable images per part


@dataclass(frozen=True)
class Refit:
    epochs: list[int]  #: per member, the epochs its trial needed
    images: int  #: train + val


@dataclass
class BundleManifest:
    """Everything about an exported model. Only the first three fields are needed to predict."""

    model: str  #: the Keras file, relative to the bundle folder
    class_names: list[str]
    preprocessing: Preprocessing
    format: int = BUNDLE_FORMAT
    study: str | None = None
    trial: int | None = None  #: the best trial
    members: list[Member] = field(default_factory=list)
    left_out: list[int] = field(default_factory=list)  #: trials among the best that lowered the average's val score
    architecture: str | None = None
    dataset: DatasetRecord | None = None
    objective: str | None = None
    ordinal: bool = False  #: the classes are grades, lowest first
    params: dict[str, Any] = field(default_factory=dict)  #: the best trial's
    best_epoch: int | None = None
    refit: Refit | None = None
    val_scores: dict[str, float] = field(default_factory=dict)  #: the bundle's model on val
    val_scores_stored: dict[str, float] | None = None  #: what the best trial recorded
    test: TestReport | None = None  #: of the calibrated probabilities
    calibration: Calibration | None = None  #: bundles before calibration: none
    reproduce: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    created_on: dict[str, str] = field(default_factory=dict)
    formats: dict[str, FormatCheck] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return self.preprocessing.image_size

    @property
    def channels(self) -> int:
        return self.preprocessing.channels

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> BundleManifest:
        nested = {"preprocessing": Preprocessing, "dataset": DatasetRecord, "refit": Refit}
        values = {
            name: kind(**stored[name]) if stored.get(name) is not None else None
            for name, kind in nested.items()
            if name in stored
        }
        if stored.get("test") is not None:
            values["test"] = TestReport.from_json(stored["test"])
        if stored.get("calibration") is not None:
            values["calibration"] = Calibration.from_json(stored["calibration"])
        values["members"] = [Member(**member) for member in stored.get("members", [])]
        values["formats"] = {name: FormatCheck(**check) for name, check in stored.get("formats", {}).items()}
        return cls(**{**stored, **values})

    @classmethod
    def read(cls, folder: Path) -> BundleManifest:
        """The manifest of a bundle folder; a clear message for anything else."""
        path = Path(folder) / BUNDLE_FILE
        if not path.exists():
            raise AutomlImgError(
                f"{folder} is not an automl-img bundle (no {BUNDLE_FILE}); give the folder export-best wrote"
            )
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError, KeyError) as exc:
            raise AutomlImgError(
                f"{path} is not a bundle manifest this version can read ({exc}); "
                "export it again with `automl-img export-best`"
            ) from None

    def write(self, folder: Path) -> None:
        (Path(folder) / BUNDLE_FILE).write_text(self.to_json(), encoding="utf-8")
