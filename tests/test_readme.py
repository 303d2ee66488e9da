"""The README is the front door: its command list matches the CLI, and --help stays light."""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import REPO
from typer.main import get_command

from automl_img.cli import app

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_command_table_matches_the_cli():
    listed = set(re.findall(r"^\| `automl-img ([a-z-]+)", README, re.M))
    assert listed == set(get_command(app).commands)


def test_readme_has_the_demo_and_test_lines():
    for marker, needle in (("demo-command", "automl-img search --dataset digits"), ("test-command", "pytest")):
        block = README.split(f"<!-- {marker} -->", 1)[1].split("```")[1]
        assert needle in block and "pip install" in block


def test_help_does_not_import_tensorflow():
    code = (
        "import sys; from typer.testing import CliRunner; from automl_img.cli import app; "
        "[CliRunner().invoke(app, a) for a in (['--help'], ['search', '--help'], ['predict', '--help'])]; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


DOCS = sorted((REPO / "docs").glob("*.md"))


def test_every_guide_page_is_linked_from_the_readme():
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", README))
    assert linked == {f"docs/{page.name}" for page in DOCS}


def test_relative_links_of_the_readme_and_the_guide_lead_to_files():
    for page in [REPO / "README.md", REPO / "benchmarks" / "README.md", *DOCS]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links to missing {target}"


def test_the_search_synopsis_lists_every_option_of_search():
    synopsis = (REPO / "docs" / "search.md").read_text(encoding="utf-8").split("```", 2)[1]
    search = get_command(app).commands["search"]
    options = {opt for param in search.params for opt in param.opts if opt.startswith("--")} - {"--param"}
    assert options <= set(re.findall(r"--[a-z-]+", synopsis)), options - set(re.findall(r"--[a-z-]+", synopsis))
