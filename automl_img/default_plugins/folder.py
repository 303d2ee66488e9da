"""The ``folder`` loader: one sub-folder per class, or train/val/test folders of class folders."""

from __future__ import annotations

from automl_img.data.imageset import ImageSet, list_image_folder
from automl_img.errors import DataError
from automl_img.hookspecs import hookimpl


@hookimpl
def register_dataset_loaders(register):
    register("folder", load_folder)


def load_folder(source: str | None) -> ImageSet:
    """DATA_DIR/<class>/*.png, or DATA_DIR/{train,val,test}/<class>/*.png used as given."""
    if not source:
        raise DataError("give DATA_DIR, the folder holding one sub-folder per class (or --dataset digits for the demo)")
    return list_image_folder(source)
