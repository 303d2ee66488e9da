"""The report says only what it knows: plots that need more trials are left out, with the reason."""

from __future__ import annotations

import re

import pytest
from helpers import run

pytestmark = pytest.mark.slow  # a real search; test_smoke.py writes a report in the fast lane


def test_report_of_one_trial_leaves_out_parameter_plots_and_says_why(workdir, digits_dir):
    run("search", digits_dir, "--trials", 1, "--epochs", 1, "-p", "image_size=8", "--seed", 0)
    page = (workdir / run("report").output.split("wrote ", 1)[1].strip()).read_text(encoding="utf-8")
    sections = dict(re.findall(r"<h2>(.*?)</h2>(.*?)(?=<h2>|$)", page, flags=re.S))
    for title in ("Parallel coordinates of the most important parameters",
                  "Slices: objective against each important parameter"):
        assert "<img" not in sections[title] and "Left out: with 1 completed trial" in sections[title], title
    assert "<img" in sections["Optimisation history"]  # what one trial does show is still drawn
    assert "<img" in sections["Learning curves of the best trial (#0)"]
