"""automl-img: AutoML for image classification (Optuna search over Keras models, pluggy plugins)."""

from __future__ import annotations

import os

# Quiet TensorFlow's C++ start-up chatter; set before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from automl_img.data.imageset import ImageSet
from automl_img.errors import AutomlImgError, DataError, PluginError, StudyError
from automl_img.hookspecs import hookimpl

__version__ = "0.1.0"

# The Python API (automl_img/api.py), imported on first use so that `automl-img --help` stays instant.
_API = (
    "audit",
    "search",
    "export_best",
    "load_bundle",
    "report",
    "show",
    "studies",
    "register_plugin",
    "unregister_plugin",
    "SearchResult",
    "ExportedBundle",
    "Report",
)


def __getattr__(name: str):
    if name in _API:
        from automl_img import api

        return getattr(api, name)
    raise AttributeError(f"module 'automl_img' has no attribute {name!r}")


__all__ = ["AutomlImgError", "DataError", "ImageSet", "PluginError", "StudyError", "hookimpl", "__version__", *_API]
