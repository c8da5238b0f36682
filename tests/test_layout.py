"""The house's shape, read from the code's own imports: data flows one way and nothing imports in a circle.

Stages in data-flow order: train -> export -> edge -> benchmarks -> sweep -> deploy. contracts/ (the formats table,
manifest, preprocessing, atomic writes and model runners) is what they all share, and imports none of them. Every
import counts, including those inside functions: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ORDER = ("contracts", "train", "export", "edge", "benchmarks", "sweep", "deploy")
MAX_LINES = 330  # "about 300 lines per module" (STYLE.md), with room for a docstring that grows


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in ORDER for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Our modules that `path` imports (the most specific module each import statement names)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".") if is_package else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
                break
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(path, name, set(mods)) for name, path in mods.items()}


def test_no_stage_imports_a_later_one():
    rank = {pkg: i for i, pkg in enumerate(ORDER)}
    backwards = [
        f"{a} imports {b}"
        for a, deps in _graph().items()
        for b in deps
        if rank[b.split(".")[0]] > rank[a.split(".")[0]]
    ]
    assert not backwards, "imports against the data flow (" + " -> ".join(ORDER) + "):\n" + "\n".join(backwards)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle_between_files():
    graph = _graph()
    # A package's __init__ is imported by its submodules implicitly; only written imports make arrows here.
    cycle = _find_cycle(graph)
    assert cycle is None, "files import each other: " + " -> ".join(cycle)


def test_no_import_cycle_between_packages():
    pkgs: dict[str, set[str]] = {}
    for a, deps in _graph().items():
        pa = a.rpartition(".")[0] if a.count(".") and not (REPO / a.replace(".", "/")).is_dir() else a
        for b in deps:
            pb = b.rpartition(".")[0] if b.count(".") and not (REPO / b.replace(".", "/")).is_dir() else b
            if pa != pb and not pb.startswith(pa + ".") and not pa.startswith(pb + "."):
                pkgs.setdefault(pa, set()).add(pb)
    cycle = _find_cycle(pkgs)
    assert cycle is None, "packages import each other: " + " -> ".join(cycle)


def test_the_cycle_checks_can_fail():
    """The checks above are only worth something if they see a cycle and a backward arrow when there is one."""
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    src = REPO / "contracts" / "runners" / "__init__.py"
    assert "contracts.runners.onnx" in _imports(src, "contracts.runners", set(_modules()))  # a lazy import counts


def test_contracts_import_only_the_standard_library_numpy_and_opencv():
    allowed_third_party = {"numpy", "cv2", "ai_edge_litert", "tflite_runtime", "onnxruntime"}
    ours = set(ORDER)
    bad = []
    for p in (REPO / "contracts").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for n in names:
                top = n.split(".")[0]
                if (
                    top in ours - {"contracts"}
                    or top not in ours
                    and top not in allowed_third_party
                    and not _is_stdlib(top)
                ):
                    bad.append(f"{p.relative_to(REPO)} imports {n}")
    assert not bad, "\n".join(bad)


def _is_stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names or name == "__future__"


@pytest.mark.parametrize("pkg", ORDER)
def test_modules_stay_near_300_lines(pkg):
    long = [
        f"{p.relative_to(REPO)}: {n} lines"
        for p in (REPO / pkg).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, f"split these by concern (STYLE.md: about 300 lines a module): {long}"
