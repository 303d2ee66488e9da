"""The contract tests plugin authors import, run on our own built-in and example plugins; every hook is
documented, and what a plugin registers through it is collected."""

from __future__ import annotations

import csv
from pathlib import Path

import pluggy
import pytest
from helpers import REPO

from automl_img import hookimpl, hookspecs
from automl_img.default_plugins.blog_cnn import build_blog_cnn
from automl_img.default_plugins.folder import load_folder
from automl_img.plugins import load_plugins
from automl_img.testing import ArchitectureContract, DatasetLoaderContract, check_architecture, check_dataset_loader

EXAMPLES = load_plugins([REPO / "plugins"])


@pytest.mark.slow  # builds and trains the architecture, as the example plugins' contracts do
class TestBlogCnnContract(ArchitectureContract):
    build = staticmethod(build_blog_cnn)


@pytest.mark.slow  # the example plugin's contract: several residual networks built and trained
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
    """Every hook spec in automl_img.hookspecs, as pluggy reads them."""
    manager = pluggy.PluginManager("automl_img")
    manager.add_hookspecs(hookspecs)
    return sorted(vars(manager.hook))


class AnyKind:
    """Passes the registry's checks for a dataset loader, an architecture and an exporter alike."""

    file = "model.bin"

    def __call__(self, *args, **kwargs):
        raise AssertionError("registered to be listed, never run")

    def export(self, model, path):
        raise AssertionError("registered to be listed, never run")

    def load(self, path, safe_mode=True):
        raise AssertionError("registered to be listed, never run")


def implementing(hook: str, name: str, obj: object) -> object:
    """A plugin whose only hook implementation is ``hook``, registering ``obj`` as ``name``."""

    def implementation(register):
        register(name, obj)

    return type(f"Implements_{hook}", (), {hook: staticmethod(hookimpl(implementation))})()


def collected(hook: str, register_plugin, plugin_dir: Path) -> dict:
    """What load_plugins collects from a registered plugin implementing ``hook`` alone, beyond the built-ins."""
    before = load_plugins([plugin_dir], third_party=False).entries
    obj = AnyKind()
    register_plugin(implementing(hook, f"test-{hook}", obj), name=f"test-{hook}")
    entries = load_plugins([plugin_dir], third_party=False).entries
    added = {key: entry for key, entry in entries.items() if key not in before}
    assert all(entry.implementation is obj for entry in added.values()), added
    return added


def test_the_hook_specs_are_found():
    assert {"register_dataset_loaders", "register_architectures", "register_exporters"} <= set(hook_names())


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_documented_and_collected_from_a_registered_plugin(hook, register_plugin, tmp_path):
    guide = (REPO / "docs" / "PLUGINS.md").read_text()
    assert f"### `{hook}`" in guide, f"{hook} has no section in docs/PLUGINS.md"
    added = collected(hook, register_plugin, tmp_path)
    assert len(added) == 1, f"a plugin implementing {hook} gave {sorted(added)}, not one entry"
    [((_kind, name), entry)] = added.items()
    assert name == f"test-{hook}" and entry.source == "registered in-process", entry


def test_each_hook_fills_a_kind_of_its_own(register_plugin, tmp_path):
    kinds = {hook: sorted(kind for kind, _ in collected(hook, register_plugin, tmp_path)) for hook in hook_names()}
    assert all(len(found) == 1 for found in kinds.values()), kinds
    assert len({found[0] for found in kinds.values()}) == len(kinds), kinds
