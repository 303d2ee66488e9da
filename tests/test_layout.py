"""The package's shape: no module imports one that imports it back, at any depth, at module level or inside
a function (a circle makes every change to one module a change to the other)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "automl_img"


def _imports() -> dict[str, set[str]]:
    modules = {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
    }
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("automl_img"):
                named = [f"{node.module}.{alias.name}" for alias in node.names]
                named = [target for target in named if target in modules]
                targets = named or ([node.module] if node.module != "automl_img" else [])
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.startswith("automl_img")]
            else:
                continue
            graph[name] |= {target for target in targets if target in modules and target != name}
    return graph


def _circle_through(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path start -> ... -> start, if there is one."""
    paths = [[start]]
    seen: set[str] = set()
    while paths:
        path = paths.pop()
        for after in sorted(graph[path[-1]]):
            if after == start:
                return path + [start]
            if after not in seen:
                seen.add(after)
                paths.append(path + [after])
    return None


def test_no_module_imports_itself_back():
    graph = _imports()
    assert graph.get("automl_img.searching.run"), "the walk found no imports"
    circles = [circle for name in sorted(graph) if (circle := _circle_through(name, graph))]
    assert circles == [], "import circles: " + "; ".join(" -> ".join(circle) for circle in circles)


def test_the_walk_sees_a_circle_made_on_purpose(tmp_path, monkeypatch):
    package = tmp_path / "automl_img"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from automl_img import b\n")
    (package / "b.py").write_text("def f():\n    from automl_img.a import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    graph = _imports()
    assert _circle_through("automl_img.a", graph) == ["automl_img.a", "automl_img.b", "automl_img.a"]
