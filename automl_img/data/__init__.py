"""Images on disk: listing, decoding, the per-size cache and the study's split."""

from automl_img.data.cache import DecodedImages, ImageCache
from automl_img.data.decode import UnreadableImage, load_image, read_image
from automl_img.data.imageset import IMAGE_EXTENSIONS, ImageSet, list_image_folder
from automl_img.data.split import Split, make_split

__all__ = [
    "IMAGE_EXTENSIONS",
    "DecodedImages",
    "ImageCache",
    "ImageSet",
    "Split",
    "UnreadableImage",
    "list_image_folder",
    "load_image",
    "make_split",
    "read_image",
]
