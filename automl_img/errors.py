"""User-facing errors: the CLI prints their message on one line and exits 1."""

from __future__ import annotations


class AutomlImgError(Exception):
    """A problem the user can fix; the message names the bad value and the fix."""


class DataError(AutomlImgError):
    """The images, their layout or their labels cannot be used."""


class PluginError(AutomlImgError):
    """A plugin is missing, duplicated or broke its contract."""


class StudyError(AutomlImgError):
    """The study, its storage or its trials cannot be used as asked."""


class TrialFailed(Exception):
    """One trial could not finish; it is recorded as failed and the search goes on."""
