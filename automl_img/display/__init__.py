"""What a person sees: the terminal and notebook displays, study tables; and which display a search gets."""

from __future__ import annotations

from automl_img.display.console import JsonLinesDisplay, LiveDisplay, QuietDisplay
from automl_img.display.notebook import NotebookDisplay, in_notebook
from automl_img.searching.options import SearchOptions


def search_display(options: SearchOptions, quiet: bool = False, json_lines: bool = False) -> QuietDisplay:
    """The display asked for: JSON lines, the summary alone, or live progress (notebook or terminal)."""
    if json_lines or quiet:
        return (JsonLinesDisplay if json_lines else QuietDisplay)(options.trials, options.timeout)
    return (NotebookDisplay if in_notebook() else LiveDisplay)(options.trials, options.timeout, options.workers)
