"""Plugin loading: sources, duplicates, unknown names, bad hooks."""

from __future__ import annotations

import pytest

from automl_img import hookimpl
from automl_img.errors import PluginError
from automl_img.plugins import load_plugins


def test_builtins_are_registered_like_any_plugin(tmp_path):
    registry = load_plugins([tmp_path])
    assert registry.names("dataset") == ["digits", "folder"]
    assert registry.names("architecture") == ["blog-cnn", "efficientnet-b0", "efficientnet-lite0", "mobilenet-v3-small"]
    assert {e.source for e in registry.entries.values()} == {"built-in"}


def test_duplicate_name_names_both_plugins(tmp_path):
    (tmp_path / "mine.py").write_text(
        "from automl_img import hookimpl\n"
        "@hookimpl\n"
        "def register_architectures(register):\n"
        "    register('blog-cnn', lambda hp, shape, n: None)\n"
    )
    with pytest.raises(PluginError, match=r"registered twice: by built-in and by local file .*mine.py"):
        load_plugins([tmp_path])


def test_unknown_hook_is_refused(tmp_path):
    (tmp_path / "typo.py").write_text(
        "from automl_img import hookimpl\n@hookimpl\ndef register_architecture(register):\n    pass\n"
    )
    with pytest.raises(PluginError, match="implements a hook automl-img does not have"):
        load_plugins([tmp_path])


def test_broken_local_file_is_named(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('oops')\n")
    with pytest.raises(PluginError, match=r"broken.py failed to import: RuntimeError\('oops'\)"):
        load_plugins([tmp_path])


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(PluginError, match="unknown architecture 'resnet'; known: blog-cnn"):
        load_plugins([tmp_path]).get("architecture", "resnet")


def test_third_party_can_be_switched_off(tmp_path, monkeypatch):
    (tmp_path / "extra.py").write_text(
        "from automl_img import hookimpl\n@hookimpl\ndef register_architectures(register):\n"
        "    register('extra', lambda hp, shape, n: None)\n"
    )
    assert "extra" in load_plugins([tmp_path]).names("architecture")
    monkeypatch.setenv("AUTOML_IMG_NO_PLUGINS", "1")
    assert "extra" not in load_plugins([tmp_path]).names("architecture")


class Raising:
    @hookimpl
    def register_dataset_loaders(self, register):
        raise ValueError("plugin bug")


def test_plugin_raising_in_a_hook_is_named(tmp_path, register_plugin):
    register_plugin(Raising(), name="raising")
    with pytest.raises(PluginError, match="registered in-process failed in register_dataset_loaders"):
        load_plugins([tmp_path])
