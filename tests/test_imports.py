"""Issue 25: the stages' modules (train, export, bench) import each other without a loop, and export imports nothing
from the bench (it reads what a microcontroller runs from :mod:`edgecifar.micro`). Read from the sources: every
import counts, at module level or inside a function (a lazy import is still a dependency), and no module is
executed to find out."""

from __future__ import annotations

import ast
from pathlib import Path

import edgecifar.bench
import edgecifar.export
import edgecifar.train

PACKAGES = {"edgecifar.bench": Path(edgecifar.bench.__file__).parent,
            "edgecifar.export": Path(edgecifar.export.__file__).parent,
            "edgecifar.train": Path(edgecifar.train.__file__).parent}


def modules(packages: dict[str, Path] = PACKAGES) -> dict[str, Path]:
    """Each module of the packages by its dotted name, with its source file."""
    return {f"{name}.{f.stem}": f for name, folder in packages.items() for f in sorted(folder.glob("*.py"))
            if f.stem != "__init__"}


def imports(source: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``source`` imports anywhere in it (``from pkg import module`` included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found


def import_graph(packages: dict[str, Path] = PACKAGES) -> dict[str, set[str]]:
    known = modules(packages)
    return {name: imports(path, set(known)) - {name} for name, path in known.items()}


def a_loop(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop as the modules around it (the first repeated at the end), or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return None
        for other in sorted(graph.get(name, ())):
            if found := visit(other, path + [name]):
                return found
        done.add(name)
        return None

    return next((found for name in sorted(graph) if (found := visit(name, []))), None)


def test_the_loop_finder_finds_a_loop_and_only_a_loop():
    assert a_loop({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert a_loop({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_train_export_or_bench_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert {"edgecifar.bench.core", "edgecifar.export.pipeline", "edgecifar.train.runner"} <= set(graph)  # found
    assert a_loop(graph) is None


def test_no_export_module_imports_anything_from_the_bench():
    graph = import_graph()
    assert {name: sorted(m for m in imported if m.startswith("edgecifar.bench."))
            for name, imported in graph.items() if name.startswith("edgecifar.export.")} == \
        {name: [] for name in graph if name.startswith("edgecifar.export.")}


def test_what_runs_on_a_microcontroller_and_its_check_in_a_process_live_in_edgecifar_not_in_the_bench():
    import edgecifar.micro
    import edgecifar.workers

    bench = set(modules())
    for core in (edgecifar.micro, edgecifar.workers):
        assert not {m for m in imports(Path(core.__file__), bench) if m.startswith("edgecifar.bench.")}


def test_the_android_output_parser_is_a_module_the_device_table_imports_not_the_reverse():
    graph = import_graph()
    assert "edgecifar.bench.android" in graph["edgecifar.bench.devices"]
    assert not graph["edgecifar.bench.android"] & {"edgecifar.bench.devices", "edgecifar.bench.core",
                                                   "edgecifar.bench.report"}


def test_devices_leave_how_rows_are_shown_to_the_report():
    graph = import_graph()
    assert not graph["edgecifar.bench.devices"] & {"edgecifar.bench.report", "edgecifar.bench.mcu",
                                                   "edgecifar.bench.core"}
