"""The package's shape: no import cycles inside ``pipeline`` and no demo or test code imported by it.

Static (the source files' import statements, function-level imports included), so a cycle is caught
even where a lazy import would hide it at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline"


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports, by absolute name (``from x import y`` counts ``x.y`` if a module)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {d for d in _imports(m, f) if d in mods and d != m} for m, f in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: Cycles known and not yet broken, each exactly as it stands (one that grows fails the test too). The web
#: layer's cycle (crm.api, ingress, media.web, open311.api, openapi) is broken: the media URLs and the media
#: part of the OpenAPI document live in modules of their own (pipeline/media/urls.py, contract.py).
KNOWN_CYCLES: list[list[str]] = []


def test_no_import_cycles_in_the_package():
    graph = _graph()
    assert "pipeline.crm.notify.outbox" in graph and "pipeline.settings" in graph  # the walk saw the tree
    assert [c for c in _cycles(graph) if c not in KNOWN_CYCLES] == []


def test_the_package_imports_no_demo_or_test_code():
    offending = {
        (m, d)
        for m, f in _modules().items()
        for d in _imports(m, f)
        if d.split(".")[0] in {"demo", "tests", "bench", "examples"} or d.startswith("crm_chaos_hooks")
    }
    assert offending == set()


def _readme_tree() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```\npipeline/")
    return text[start + 4 : text.index("```", start + 4)]


def test_the_readmes_architecture_tree_matches_the_repository():
    """Every tracked module and package of ``pipeline/`` (and of its sources/ and crm/, which the tree
    opens), every top-level directory, is named in README's tree; everything it names exists."""
    import re
    import subprocess

    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    named: set[str] = set()
    for line in _readme_tree().splitlines():
        column = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]  # the name column, before the text
        named |= {n.strip() for n in column.split(",") if n.strip() and not n.strip().startswith("`")}

    def entries(prefix: str) -> set[str]:
        out = set()
        for path in tracked:
            if path.startswith(prefix):
                first, _, rest = path.removeprefix(prefix).partition("/")
                out.add(f"{first}/" if rest else first)
        return {e for e in out if e != "__init__.py" and not e.startswith(("__pycache__", "."))}

    want = entries("pipeline/") | entries("pipeline/sources/") | entries("pipeline/crm/")
    want |= {e for e in entries("") if e.endswith("/")} | {".ci/"}  # .ci/ is hidden, named all the same
    missing = sorted(e for e in want if e not in named and not any(n.startswith(e) for n in named))
    assert not missing, f"README's architecture tree does not name: {missing}"
    files = {Path(p).name for p in tracked} | set(tracked)
    dirs = {part + "/" for p in tracked for part in Path(p).parts[:-1]}
    ghosts = sorted(n for n in named if n not in files and n not in dirs)
    assert not ghosts, f"README's architecture tree names what does not exist: {ghosts}"
