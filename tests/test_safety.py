"""Bundles from elsewhere cannot run code on predict unless the user opts in."""

from __future__ import annotations

import json

import cv2
import numpy as np
from helpers import run


def test_bundle_with_a_lambda_layer_is_refused_unless_unsafe(workdir, tmp_path):
    from automl_img.data.decode import DECODE_VERSION
    from automl_img.tf_runtime import keras

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    inputs = keras.Input((8, 8, 1), dtype="uint8")
    same = keras.layers.Lambda(lambda x: x, output_shape=(8, 8, 1))(inputs)  # code travels in the file
    scaled = keras.layers.Rescaling(1 / 255)(same)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(scaled))
    keras.Model(inputs, outputs).save(bundle / "model.keras")
    (bundle / "bundle.json").write_text(
        json.dumps(
            {
                "model": "model.keras",
                "class_names": ["a", "b"],
                "preprocessing": {"image_size": 8, "channels": 1, "decode": DECODE_VERSION},  # today's pixels
            }
        )
    )
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((8, 8), np.uint8))

    refused = run("predict", bundle, image, expect=1)
    assert "contains code" in refused.output and "--unsafe" in refused.output
    assert "Traceback" not in refused.output
    allowed = run("predict", bundle, image, "--unsafe")
    assert "x.png" in allowed.output
