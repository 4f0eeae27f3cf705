"""The package's shape, checked: imports flow one way (no cycle anywhere in swarmlet/,
counting imports under TYPE_CHECKING and inside functions), and the worker side never
loads the manager side, the store or pysyncobj."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "swarmlet"


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Dotted module name -> file; a package is its ``__init__.py``."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    """The longest of ``name``, its parents… that is one of our modules."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that ``name`` imports, anywhere in its file. ``from pkg import x`` is
    an edge to ``pkg.x`` when that is a module, else to ``pkg``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            edges.update(_known_prefix(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: up from this module's package
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                edges.add(target if target in modules else _known_prefix(base, modules))
    edges.discard(None)
    edges.discard(name)
    return edges


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None."""
    state: dict[str, str] = {}  # "active" while on the path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "active"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "active":
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_type_checking_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import x\n")
    (pkg / "sub" / "leaf.py").write_text("x = 1\n")
    (pkg / "a.py").write_text(textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from pkg.b import B
        def f():
            from pkg import sub
            from pkg.sub import x
    """))
    (pkg / "b.py").write_text("import pkg.sub.leaf\n")
    modules = module_files(pkg)
    assert imports_of("pkg.a", modules["pkg.a"], modules) == {"pkg.b", "pkg.sub"}
    assert imports_of("pkg.sub", modules["pkg.sub"], modules) == {"pkg.sub.leaf"}
    assert imports_of("pkg.b", modules["pkg.b"], modules) == {"pkg.sub.leaf"}


def test_no_import_cycle_in_swarmlet():
    graph = import_graph()
    assert "swarmlet.manager.dispatcher.dispatcher" in graph and "swarmlet.api.session" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_worker_side_loads_neither_the_manager_side_nor_the_store():
    agent_modules = sorted(name for name in module_files() if name.startswith("swarmlet.agent"))
    assert "swarmlet.agent.agent" in agent_modules and "swarmlet.agent.executor" in agent_modules
    probe = textwrap.dedent(f"""
        import sys
        import {", ".join(agent_modules)}
        loaded = sorted(m for m in sys.modules
                        if m == "pysyncobj" or m.startswith(("pysyncobj.", "swarmlet.manager", "swarmlet.store")))
        print(loaded)
        sys.exit(1 if loaded else 0)
    """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=PACKAGE_DIR.parent, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"the agent imports loaded {result.stdout.strip()} {result.stderr[-2000:]}"
