"""Which display a search gets: in a Jupyter kernel, one output redrawn in place; else the terminal's."""

from __future__ import annotations

from automl_img.console import JsonLinesDisplay, LiveDisplay, QuietDisplay
from automl_img.notebook import NotebookDisplay, in_notebook
from automl_img.searching.options import SearchOptions


def search_display(options: SearchOptions, quiet: bool = False, json_lines: bool = False) -> QuietDisplay:
    """The display asked for: JSON lines, the summary alone, or live progress (notebook or terminal)."""
    if json_lines or quiet:
        return (JsonLinesDisplay if json_lines else QuietDisplay)(options.trials, options.timeout)
    return (NotebookDisplay if in_notebook() else LiveDisplay)(options.trials, options.timeout, options.workers)
