"""The Python packages' import graph: no library module imports a CLI module (xrtc.cli, xrtc.tools.*, __main__),
and no module imports itself back through others (module-level and in-function imports alike: a cycle through a
function-level import still couples the two modules). Reads the sources with `ast`; imports nothing. ~0.5 s."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"xrtc": ROOT / "compiler" / "xrtc", "xpuruntime": ROOT / "xpuruntime",
            "xrtpkg": ROOT / "formats" / "python" / "xrtpkg"}


def _modules() -> dict[str, Path]:
    out = {}
    for name, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The known modules `module` imports (`from .x import y` counts x.y when that is a module, else x)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # a.b.c where only a.b is ours
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(m, p, known) for m, p in modules.items()}


def _is_cli(module: str) -> bool:
    return module in ("xrtc.cli", "xrtc.__main__") or module.startswith("xrtc.tools")


def test_no_library_module_imports_a_cli_module():
    graph = _graph()
    bad = sorted(f"{m} imports {d}" for m, deps in graph.items() if not _is_cli(m) for d in deps if _is_cli(d))
    assert not bad, "library modules import CLI modules: " + "; ".join(bad)


def test_no_import_cycles():
    graph = _graph()
    # A package's __init__ importing its own submodules (re-exports) is not a cycle between peers.
    edges = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    cycles, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(cycles)


STAGES = ("xrtc.build", "xrtc.settle", "xrtc.package", "xrtc.plan")


def test_stage_records_are_a_leaf_and_targets_never_reach_back_into_the_stages():
    """xrtc.variants (what travels between stages) imports only xrtc.errors, so every stage can use it; a target
    builds what it is asked and returns records: it never imports the stages that call it."""
    graph = _graph()
    assert graph["xrtc.variants"] <= {"xrtc.errors"}, graph["xrtc.variants"]
    bad = sorted(f"{m} imports {d}" for m, deps in graph.items() if m.startswith("xrtc.targets")
                 for d in deps if d in STAGES)
    assert not bad, "targets import compile stages: " + "; ".join(bad)
