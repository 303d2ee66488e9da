"""Export formats: converter output stays out of the terminal, and a failure is one line naming the log.

A successful export's silence, with its export.log, is checked on a mixed-size average in test_core.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import run

pytestmark = pytest.mark.slow  # real searches, real converters in real processes

AREA_NET = '''
from automl_img import hookimpl


@hookimpl
def register_architectures(register):
    register("area-net", build_area_net)


def build_area_net(hp, input_shape, num_classes):
    """Shrinks with ResizeArea, which LiteRT's converter cannot express."""
    import keras

    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(keras.layers.Resizing(4, 4, interpolation="area")(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
'''


def export(*args: str, cwd) -> subprocess.CompletedProcess:
    """export-best in a real process, so that what C++ converters print to the terminal is seen too."""
    return subprocess.run(
        [sys.executable, "-m", "automl_img", "export-best", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_converter_output_goes_to_the_bundle_log_and_a_failure_is_one_line(workdir, digits_dir):
    (workdir / "plugins").mkdir()
    (workdir / "plugins" / "area_net.py").write_text(AREA_NET)
    run("search", digits_dir, "--architecture", "area-net", "--trials", 1, "--epochs", 1, "-p", "image_size=8")

    failed = export("--format", "tflite", cwd=workdir)
    log = workdir / "studies" / "digits" / "export.failed-export.log"
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("Error: cannot write the tflite format")
    assert f"(the converter's log: {log})" in failed.stderr
    assert "ResizeArea" in log.read_text()  # the converter's own explanation is kept
    assert not (workdir / "studies" / "digits" / "export").exists()  # no half bundle
