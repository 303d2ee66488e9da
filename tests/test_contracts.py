"""The contract tests plugin authors import, run on our own built-in and example plugins; every hook is
documented and exercised."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from helpers import REPO

from automl_img import hookspecs
from automl_img.default_plugins.blog_cnn import build_blog_cnn
from automl_img.default_plugins.folder import load_folder
from automl_img.plugins import load_plugins
from automl_img.testing import ArchitectureContract, DatasetLoaderContract, check_architecture, check_dataset_loader

EXAMPLES = load_plugins([REPO / "plugins"])


class TestBlogCnnContract(ArchitectureContract):
    build = staticmethod(build_blog_cnn)


class TestSmallResnetContract(ArchitectureContract):
    build = staticmethod(EXAMPLES.get("architecture", "small-resnet").implementation)


def test_folder_loader_contract(digits_dir):
    images = check_dataset_loader(load_folder, str(digits_dir))
    assert len(images) == 1797


def test_csv_example_loader_contract(digits_dir, tmp_path):
    table = tmp_path / "labels.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        files = sorted(digits_dir.glob("0/*.png"))[:20] + sorted(digits_dir.glob("1/*.png"))[:20]
        for i, file in enumerate(files):
            writer.writerow([str(file), file.parent.name, ("train", "val", "test")[i % 3]])
    images = check_dataset_loader(EXAMPLES.get("dataset", "csv").implementation, str(table))
    assert images.parts is not None and set(images.parts) == {"train", "val", "test"}


class TestLoaderContractClass(DatasetLoaderContract):
    load = staticmethod(EXAMPLES.get("dataset", "digits").implementation)

    @pytest.fixture(autouse=True)
    def _source(self, digits_dir):
        self.source = str(digits_dir)


def test_contract_catches_an_architecture_that_forgets_softmax():
    def logits(hp, input_shape, num_classes):
        import keras

        inputs = keras.Input(input_shape)
        return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs)))

    with pytest.raises(Exception, match="softmax"):
        check_architecture(logits)


def test_contract_catches_an_architecture_that_outputs_nan():
    def nan_weights(hp, input_shape, num_classes):
        import keras

        inputs = keras.Input(input_shape)
        nan = keras.initializers.Constant(float("nan"))
        dense = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=nan)
        return keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))

    with pytest.raises(Exception, match="already outputs NaN"):
        check_architecture(nan_weights)


def test_contract_catches_a_choice_made_outside_hp():
    import random

    def sneaky(hp, input_shape, num_classes):
        import keras

        inputs = keras.Input(input_shape)
        hidden = keras.layers.Dense(random.choice([8, 16, 32, 64]))(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(hidden))

    random.seed(1)
    with pytest.raises(AssertionError, match="declare every choice through hp"):
        check_architecture(sneaky, trials=5)


def hook_names() -> list[str]:
    return sorted(name for name in dir(hookspecs) if name.startswith("register_"))


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_documented_and_exercised_by_a_test(hook):
    guide = (REPO / "docs" / "PLUGINS.md").read_text()
    assert f"### `{hook}`" in guide, f"{hook} has no section in docs/PLUGINS.md"
    implementations = [p for p in (REPO / "tests").rglob("*.py")
                       if p.name != Path(__file__).name and re.search(rf"def {hook}\(", p.read_text())]
    assert implementations, f"no test implements {hook}"
