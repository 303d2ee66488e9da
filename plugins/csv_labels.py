"""Example local plugin: a ``csv`` dataset loader for a CSV of ``path,label[,split]`` rows.

Any ``*.py`` file in ./plugins is loaded by automl-img; copy this one to start your own.
Use it as:  automl-img search labels.csv --dataset csv
"""

from __future__ import annotations

import csv
from pathlib import Path

from automl_img import DataError, ImageSet, hookimpl


@hookimpl
def register_dataset_loaders(register):
    register("csv", load_csv)


def load_csv(source: str | None) -> ImageSet:
    """Images listed in a CSV (columns path,label and optionally split); paths relative to the CSV."""
    if not source:
        raise DataError("the csv loader needs the CSV file: automl-img search labels.csv --dataset csv")
    table = Path(source)
    if not table.is_file():
        raise DataError(f"{table} is not a CSV file; give a file with columns path,label")
    with open(table, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if not {"path", "label"} <= columns:
            raise DataError(f"{table} needs a header with columns path,label (found: {', '.join(sorted(columns))})")
        rows = [
            (row["path"], row["label"], row["split"]) if "split" in columns else (row["path"], row["label"])
            for row in reader
        ]
    present = [row for row in rows if (table.parent / row[0]).is_file()]
    missing = [(row[0], "listed in the CSV but not found") for row in rows if row not in present]
    return ImageSet.from_labelled_files(table.parent, present, skipped=missing)
