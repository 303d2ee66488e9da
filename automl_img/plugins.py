"""The plugin manager: built-ins, the ``automl_img`` entry-point group and local ``plugins/*.py`` files."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, overload

import pluggy

from automl_img import hookspecs
from automl_img.errors import PluginError
from automl_img.hookspecs import Architecture, DatasetLoader, Exporter
from automl_img.hypermodels import as_architecture
from automl_img.native_output import native_stderr_muted

DEFAULT_PLUGINS = (
    "automl_img.default_plugins.folder",
    "automl_img.default_plugins.digits",
    "automl_img.default_plugins.blog_cnn",
    "automl_img.default_plugins.backbones",
    "automl_img.default_plugins.formats",
)
HOOKS = {
    "dataset": "register_dataset_loaders",
    "architecture": "register_architectures",
    "exporter": "register_exporters",
}
ENTRY_POINT_GROUP = "automl_img"
LOCAL_PLUGINS_DIR = Path("plugins")
DISABLE_ENV = "AUTOML_IMG_NO_PLUGINS"  # set to 1: built-ins only, for untrusted working directories


#: what an entry holds: a ``DatasetLoader``, an ``Architecture`` or an ``Exporter``, by its kind
_Implementation = TypeVar("_Implementation")


@dataclass(frozen=True)
class Entry(Generic[_Implementation]):
    """One registered dataset loader, architecture or exporter, and where it came from."""

    kind: str  #: "dataset", "architecture" or "exporter"
    name: str
    implementation: _Implementation  #: what the plugin registered under the name
    source: str  #: which plugin registered it, in words
    channels: int | None = None  #: architectures only: the channels the model needs (None: the data's)
    min_image_size: int | None = None  #: architectures only: smaller images are enlarged to this size

    @property
    def description(self) -> str:
        described = self.implementation if callable(self.implementation) else type(self.implementation)
        doc = inspect.getdoc(described) or ""
        return doc.splitlines()[0] if doc else ""


@dataclass
class Registry:
    """Dataset loaders, architectures and exporters by name."""

    entries: dict[tuple[str, str], Entry[Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # plugin name -> where it was loaded from
    plugin_source: PluginSource = field(default_factory=lambda: PluginSource())  # a trial process loads the same

    def add(self, entry: Entry[Any]) -> None:
        if not isinstance(entry.name, str) or not entry.name:
            raise PluginError(f"{entry.source} registered a {entry.kind} without a name")
        if entry.kind == "exporter":
            if not all(hasattr(entry.implementation, attribute) for attribute in ("file", "export", "load")):
                raise PluginError(
                    f"{entry.source}: exporter {entry.name!r} needs .file, .export(model, path) "
                    "and .load(path, safe_mode=True)"
                )
        elif not callable(entry.implementation):
            raise PluginError(f"{entry.source} registered {entry.kind} {entry.name!r} with something not callable")
        if entry.channels not in (None, 1, 3):
            raise PluginError(
                f"{entry.source}: {entry.kind} {entry.name!r} asks for {entry.channels} channels; use 1 or 3"
            )
        previous = self.entries.get((entry.kind, entry.name))
        if previous is not None:
            raise PluginError(
                f"{entry.kind} {entry.name!r} is registered twice: by {previous.source} and by {entry.source}; "
                "rename one of them"
            )
        self.entries[(entry.kind, entry.name)] = entry

    @overload
    def get(self, kind: Literal["dataset"], name: str) -> Entry[DatasetLoader]: ...
    @overload
    def get(self, kind: Literal["architecture"], name: str) -> Entry[Architecture]: ...
    @overload
    def get(self, kind: Literal["exporter"], name: str) -> Entry[Exporter]: ...
    @overload
    def get(self, kind: str, name: str) -> Entry[DatasetLoader | Architecture | Exporter]: ...
    def get(self, kind: str, name: str) -> Entry[Any]:
        try:
            return self.entries[(kind, name)]
        except KeyError:
            known = ", ".join(self.names(kind)) or "none"
            raise PluginError(f"unknown {kind} {name!r}; known: {known} (see `automl-img plugins`)") from None

    def architecture(self, name: str) -> Architecture:
        return self.get("architecture", name).implementation

    def exporter(self, name: str) -> Exporter:
        return self.get("exporter", name).implementation

    def loaded_from(self) -> list[str]:
        """Where every plugin that is not built in came from, for the user to see what runs."""
        return sorted(source for source in self.sources.values() if source != "built-in")

    def names(self, kind: str) -> list[str]:
        return sorted(name for entry_kind, name in self.entries if entry_kind == kind)

    def of_kind(self, kind: str) -> list[Entry[Any]]:
        return [self.entries[(kind, name)] for name in self.names(kind)]


@dataclass(frozen=True)
class PluginSource:
    """Where plugins were loaded from (picklable: it crosses into trial processes)."""

    plugin_dirs: list[Path] | None = None
    third_party: bool | None = None
    in_process: tuple[object, ...] = ()  #: plugins registered on ``pm`` besides the built-ins
    #: ``in_process`` as it crossed into this process: unpickled by ``load``, so a failure is a PluginError there
    shipped: bytes | None = field(default=None, repr=False)

    def load(self) -> Registry:
        for name, plugin in self._in_process():
            if not pm.is_registered(plugin) and pm.get_plugin(name) is None:
                pm.register(plugin, name=name)
        return load_plugins(self.plugin_dirs, self.third_party)

    def _in_process(self) -> list[tuple[str, object]]:
        if self.shipped is None:
            return [(pm.get_name(plugin) or repr(plugin), plugin) for plugin in self.in_process]
        from automl_img.native_output import muted_stderr

        try:
            with muted_stderr():  # a plugin that uses Keras imports TensorFlow here, whose C++ start-up notes are noise
                return pickle.loads(self.shipped)
        except Exception as exc:  # noqa: BLE001 - unpickling imports and runs the plugins' code: anything can fail
            raise PluginError(
                f"a plugin registered in the search's process could not be rebuilt in the trial process "
                f"({exc!r}); {_MOVE_TO_FILE}"
            ) from None

    def __reduce__(self):
        # Plugins defined in a notebook cell or a script live in ``__main__``, which a spawned trial process
        # cannot import: cloudpickle sends those by value (and importable ones by reference, as pickle does).
        import cloudpickle

        named = self._in_process()
        try:
            shipped = cloudpickle.dumps(named)
        except Exception as exc:  # noqa: BLE001 - whatever cloudpickle cannot send, said as a PluginError
            names = ", ".join(name for name, _ in named)
            raise PluginError(
                f"plugin {names} cannot be sent to the trial processes ({exc!r}); {_MOVE_TO_FILE}"
            ) from None
        return (PluginSource, (self.plugin_dirs, self.third_party, (), shipped))


_MOVE_TO_FILE = (
    "move the plugin into a .py file in ./plugins (or a folder given to --plugins-dir), which every "
    "trial process imports itself, and leave out its register_plugin call"
)


def _new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager("automl_img")
    manager.add_hookspecs(hookspecs)
    return manager


# Plugins registered in this process: the built-ins, and whatever a program or a test adds with
# ``pm.register(plugin)`` (unregister it when done). Entry points and local files join per load.
pm = _new_manager()
for _module_name in DEFAULT_PLUGINS:
    pm.register(importlib.import_module(_module_name), name=_module_name)


def in_process_plugins() -> list[object]:
    """Plugins registered on ``pm`` besides the built-ins."""
    return [plugin for plugin in pm.get_plugins() if pm.get_name(plugin) not in DEFAULT_PLUGINS]


def load_plugins(plugin_dirs: list[Path] | None = None, third_party: bool | None = None) -> Registry:
    """Load every plugin and collect what each registers.

    Args:
        plugin_dirs: folders of ``*.py`` plugin files; default ``./plugins`` when it exists.
        third_party: load entry points and local files; default unless ``AUTOML_IMG_NO_PLUGINS`` is set.
    """
    if third_party is None:
        third_party = os.environ.get(DISABLE_ENV, "") in ("", "0")
    manager = _new_manager()
    sources: dict[str, str] = {}
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        assert name is not None  # every registered plugin has a name
        manager.register(plugin, name=name)
        sources[name] = "built-in" if name in DEFAULT_PLUGINS else "registered in-process"
    if third_party:
        with native_stderr_muted():  # a plugin importing TensorFlow or KerasTuner: its start-up lines
            _load_third_party(manager, sources, plugin_dirs)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        name = manager.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(f"{sources.get(name, name)} implements a hook automl-img does not have: {exc}") from None
    registry = Registry(
        sources=sources, plugin_source=PluginSource(plugin_dirs, third_party, tuple(in_process_plugins()))
    )
    for kind, hook in HOOKS.items():
        _collect(manager, hook, kind, sources, registry)
    return registry


def _load_third_party(manager: pluggy.PluginManager, sources: dict[str, str], plugin_dirs: list[Path] | None) -> None:
    try:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as exc:  # a broken installed package must not hide which one it is
        raise PluginError(f"an installed automl_img plugin failed to load: {exc!r}") from exc
    for plugin, dist in manager.list_plugin_distinfo():
        name = manager.get_name(plugin)
        assert name is not None  # every registered plugin has a name
        sources[name] = f"entry point ({dist.project_name} {dist.version})"
    for folder in plugin_dirs if plugin_dirs is not None else [LOCAL_PLUGINS_DIR]:
        for path in sorted(Path(folder).glob("*.py")):
            name = f"local:{path}"
            manager.register(_import_file(path), name=name)
            sources[name] = f"local file {path}"


def _collect(manager: pluggy.PluginManager, hook: str, kind: str, sources: dict[str, str], registry: Registry) -> None:
    # The hook is called one plugin at a time (through pluggy, so its wrappers and tracing apply),
    # each with its own ``register``, so every entry knows which plugin gave it.
    implementations = getattr(manager.hook, hook).get_hookimpls()  # registration order: built-ins first
    for impl in implementations:
        source = sources.get(impl.plugin_name, impl.plugin_name)

        def register(
            name: str,
            implementation: Any,
            channels: int | None = None,
            min_image_size: int | None = None,
            _source: str = source,
        ) -> None:
            if kind == "architecture":  # a KerasTuner HyperModel or build(hp), as KerasTuner takes them
                implementation = as_architecture(implementation, f"{_source}: architecture {name!r}")
            registry.add(Entry(kind, name, implementation, _source, channels, min_image_size))

        others = [other.plugin for other in implementations if other is not impl]
        try:
            manager.subset_hook_caller(hook, remove_plugins=others)(register=register)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"{source} failed in {hook}: {exc!r}") from exc


def _import_file(path: Path) -> object:
    module_name = f"automl_img_local_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import local plugin {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise PluginError(
            f"local plugin {path} failed to import: {exc!r}; fix it or move it out of {path.parent}/"
        ) from exc
    return module
