"""The architecture(s) a study searches. Several (``--architecture blog-cnn,efficientnet-lite0``) make the family
a searched parameter, ``architecture``, with each family's own parameters and image sizes conditional on it
(as AutoKeras does); every family's defaults are queued as the study's first trials."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from automl_img.errors import PluginError
from automl_img.hookspecs import Architecture
from automl_img.space import FAMILY_PARAM


def names(architecture: str) -> list[str]:
    """``"blog-cnn, efficientnet-lite0"`` -> the names, in order, each once."""
    found = [name.strip() for name in architecture.split(",") if name.strip()]
    if not found:
        raise PluginError("--architecture names no architecture; see `automl-img plugins`")
    return list(dict.fromkeys(found))


def size_parameter(family: str, image_sizes: dict[str, list[int]]) -> str:
    """``image_size``, unless the families' candidate sizes differ: a parameter must keep one set of choices
    in a study, so each family then has its own, ``image_size_<family>``."""
    distinct = {tuple(sizes) for sizes in image_sizes.values()}
    return "image_size" if len(distinct) == 1 else f"image_size_{family}"


@dataclass(frozen=True)
class Family:
    """One architecture as a study searches it."""

    name: str
    build: Architecture
    image_sizes: list[int]
    size_parameter: str  #: the name its image size is stored under


@dataclass(frozen=True)
class Families:
    """The study's architectures; a single one is chosen without a parameter."""

    members: list[Family]

    @classmethod
    def single(cls, build: Architecture, image_sizes: list[int], name: str = "") -> Families:
        return cls([Family(name, build, list(image_sizes), "image_size")])

    def choose(self, hp: Any) -> Family:
        if len(self.members) == 1:
            return self.members[0]
        chosen = hp.Choice(FAMILY_PARAM, [family.name for family in self.members], default=self.members[0].name)
        return next(family for family in self.members if family.name == chosen)

    def default_overrides(self) -> list[dict[str, str]]:
        """Per family, what fixes it: a new study's first trials are each family's defaults."""
        return [{FAMILY_PARAM: family.name} for family in self.members] if len(self.members) > 1 else [{}]
