"""Checks anyone can run on the shape of the code (`.venv/bin/python -m pytest tests/unit/test_architecture.py`):

* no import cycle between the modules of worker/ and funnel/;
* no module in worker/ over MAX_LINES lines;
* pylint's duplicate-code check (R0801, at least 6 similar lines) finds no repeated block in worker/ and
  funnel/ (settings in pyproject.toml's [tool.pylint]; `.venv/bin/pylint worker funnel` runs the same).

Which imports make the graph: every import statement of a module, at any depth (functions and methods
included: an import deferred into a function to dodge an import-time cycle is still two modules that
depend on each other, and it is exactly the cycle the layering forbids), except those under
`if TYPE_CHECKING:` (never executed; annotations only). `from package import name` counts as an import
of `package.name` when that is a module, else of `package` (its `__init__`). Importing `a.b.c` also runs
`a/__init__` and `a/b/__init__`; those implicit edges are left out, or every package that re-exports its
modules would be a cycle.
"""

from __future__ import annotations

import ast
import graphlib
import importlib.util
import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("worker", "funnel")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the checked packages, by dotted name."""
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def dependency_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under `node` at any depth (functions and methods included), except those
    under `if TYPE_CHECKING:` (see the module docstring)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.orelse:
                yield from dependency_imports(ast.Module(body=[statement], type_ignores=[]))
        else:
            yield from dependency_imports(child)


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The checked modules `name` (at `path`) imports when it is imported."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in dependency_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in known)
            continue
        if node.level:  # relative: from the module's package, one level up per extra dot
            anchor = name.split(".") if is_package else name.split(".")[:-1]
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join([*anchor, node.module] if node.module else anchor)
        else:
            base = node.module or ""
        for alias in node.names:
            if f"{base}.{alias.name}" in known:
                out.add(f"{base}.{alias.name}")
            elif base in known:
                out.add(base)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported_modules(name, path, known) for name, path in found.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles of `graph`, each as a path a -> b -> ... -> a. graphlib names one cycle per attempt;
    the edge that closes it is dropped and the search repeated, so every cycle is reported at least
    once (cycles sharing that edge are reported through the first)."""
    edges = {node: set(targets) for node, targets in graph.items()}
    cycles: list[list[str]] = []
    while True:
        try:
            graphlib.TopologicalSorter(edges).prepare()
        except graphlib.CycleError as error:
            cycle: list[str] = list(reversed(error.args[1]))  # graphlib lists it against the edges
            cycles.append(cycle)
            edges[cycle[-2]].discard(cycle[-1])
        else:
            return cycles


def test_the_import_graph_sees_the_modules_and_their_imports() -> None:
    """Guards the checker itself: a graph without edges would find no cycle."""
    graph = import_graph()
    assert "worker.config" in graph and "funnel" in graph
    assert sum(len(targets) for targets in graph.values()) > len(graph)
    assert "worker.config" in graph["worker.stream.serve"]


def test_cycles_are_found_and_reported_as_paths() -> None:
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": {"d2"}, "d2": {"b"}, "e": {"a"}}
    found = import_cycles(graph)
    assert len(found) == 2
    for cycle in found:
        assert cycle[0] == cycle[-1]
        assert all(b in graph[a] for a, b in itertools.pairwise(cycle))
    assert {frozenset(c) for c in found} == {frozenset({"a", "b", "c"}), frozenset({"b", "d", "d2"})}
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_type_checking_imports_are_not_edges_function_level_ones_are(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import pkg.a\n"
        "from pkg import b\n"
        "from . import c\n"
        "try:\n    from .d import thing\nexcept ImportError:\n    pass\n"
        "if TYPE_CHECKING:\n    import pkg.e\n"
        "def later() -> None:\n    import pkg.f\n"
    )
    path = tmp_path / "mod.py"
    path.write_text(source)
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.e", "pkg.f", "pkg.mod"}
    assert imported_modules("pkg.mod", path, known) == {"pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.f"}


def test_no_import_cycle_between_modules() -> None:
    cycles = import_cycles(import_graph())
    listing = "\n".join("  " + " -> ".join(cycle) for cycle in cycles)
    assert not cycles, (
        f"{len(cycles)} import cycle(s) among the modules of worker/ and funnel/ (imports at any depth except "
        f"under TYPE_CHECKING; see tests/unit/test_architecture.py):\n{listing}"
    )


def test_no_worker_module_over_the_line_limit() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items() if name.startswith("worker")}
    over = sorted(((lines, name) for name, lines in sizes.items() if lines > MAX_LINES), reverse=True)
    listing = "\n".join(f"  {modules()[name].relative_to(ROOT)}: {lines} lines" for lines, name in over)
    assert not over, f"{len(over)} module(s) in worker/ over {MAX_LINES} lines (split by responsibility):\n{listing}"


def pylint_duplicates(*paths: str | Path) -> tuple[int, str]:
    """(R0801 messages, pylint's report) for `paths`, with the settings of pyproject.toml."""
    assert importlib.util.find_spec("pylint"), "pylint is in the dev extra: pip install -c constraints.txt -e '.[dev]'"
    result = subprocess.run(
        [sys.executable, "-m", "pylint", f"--rcfile={ROOT / 'pyproject.toml'}", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    # Exit status: bit 8 = refactor messages (R0801); bits 1/32 = a fatal error or a usage error.
    assert result.returncode & (1 | 32) == 0, f"pylint did not run:\n{result.stdout}\n{result.stderr}"
    return result.stdout.count("R0801"), result.stdout


def test_the_duplicate_check_finds_a_copied_block(tmp_path: Path) -> None:
    block = "".join(f"    total = total * {i} + len(items) - {i}\n" for i in range(8))
    for name in ("first", "second"):
        (tmp_path / f"{name}.py").write_text(
            f"def {name}(items: list[int]) -> int:\n    total = 0\n{block}    return total\n"
        )
    found, report = pylint_duplicates(tmp_path / "first.py", tmp_path / "second.py")
    assert found == 1, report


def test_no_repeated_block_of_code() -> None:
    """pylint's duplicate-code check (R0801) over worker/ and funnel/ with the settings of pyproject.toml."""
    blocks, report = pylint_duplicates(*PACKAGES)
    assert blocks == 0, (
        f"{blocks} repeated block(s) of code in worker/ and funnel/ (pylint R0801, at least 6 similar lines; "
        f"each lists the modules and [first:last) line ranges) - move the shared code into one function:\n"
        f"{report}"
    )


def test_layers_point_one_way() -> None:
    """The funnel library knows nothing of the worker; Kafka I/O knows nothing of the stream above it."""
    graph = import_graph()
    wrong = [
        f"{source} -> {target}"
        for source, targets in graph.items()
        for target in targets
        if (source.startswith("funnel") and target.startswith("worker"))
        or (source.startswith("worker.kafka") and target.startswith(("worker.stream", "worker.cascade")))
        or (source.startswith("worker.cascade") and target.startswith(("worker.stream", "worker.kafka")))
    ]
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_cascade_loads_no_kafka_or_http_client() -> None:
    """worker/cascade is pure: importing every module of it (and what they import) loads neither
    confluent-kafka nor an HTTP client, so `modstream eval` and the unit tests run it as the worker does."""
    cascade = sorted(name for name in modules() if name.startswith("worker.cascade"))
    probe = (
        f"import importlib, sys\nfor m in {cascade!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in ('confluent_kafka', 'aiohttp', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"worker/cascade pulls in {out.stdout.strip()}"
