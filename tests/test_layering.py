"""The import graph of both packages keeps its layers (docs/architecture.md, "Packages and layering").

Read from the source with `ast` (every import, at the top or inside a function), so a hidden
import counts like any other:
* no import cycles between modules;
* no private name (`_x`) of one module used by another (make it public under a proper name);
* core modules never import the ROS side (`nodes/`, the graph runner, the CLI);
* sam4dcap_biomech never imports sam4dcap_perception;
* imports sit at the top of core modules; inside a function only heavy or optional third-party
  libraries (opensim, cv2, mediapipe, torch, ezc3d, matplotlib, ...: see docs/architecture.md,
  "Imports"), and in `commands/` anything (`sam4dcap --help` loads every command module).
"""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sam4dcap_biomech", "sam4dcap_perception")
# Modules that are ROS adapters by design (as tests/test_core_is_ros_free.py).
ROS_SIDE = ("nodes", "ros", "graph_runner", "commands.graph", "cli")
# In the ROS layer but ROS-free by design (stdlib only): topic names and QoS kinds for everyone.
SHARED_WITH_CORE = ("ros.topics",)


def _modules():
    """{dotted module name: source path} of both packages (packages as their __init__)."""
    mods = {}
    for pkg in PACKAGES:
        base = ROOT / "src" / pkg
        for py in sorted((base / pkg).rglob("*.py")):
            parts = list(py.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = py
    return mods


MODULES = _modules()

# Known exceptions, each with its reason; the cycle test fails when one disappears (remove it here).
KNOWN_CYCLES: set[frozenset[str]] = set()
# Modules rewritten in parallel when this rule came (issues 10, 14): their function-level imports
# of project/stdlib modules move to the top after those land.
LAZY_IMPORTS_OK = {
    # graph.py loads topics.py from beside itself when a system ROS Python runs the launch file
    # without the project venv (stdlib imports inside that fallback only).
    "sam4dcap_perception.graph",
}
LAZY_IMPORTS_PENDING = {"sam4dcap_biomech.streaming_ik", "sam4dcap_biomech.trial_calibration",
                        "sam4dcap_perception.blazepose", "sam4dcap_perception.person_detector",
                        "sam4dcap_perception.fit_views", "sam4dcap_perception.multiview"}


def _is_package(name):
    return MODULES[name].name == "__init__.py"


def _resolve(module, level, importer):
    """Absolute dotted name of `from <level dots><module> import ...` inside `importer`."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _project_module(name):
    """The project module `name` is, or is inside of (None for third-party)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name):
    """[(imported project module, private names it takes from it, line)] of module `name`."""
    tree = ast.parse(MODULES[name].read_text())
    aliases = {}   # local name -> project module bound to it by an import
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                target = _project_module(a.name)
                if target:
                    found.append((target, [], node.lineno))
                    if a.asname:
                        aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(node.module, node.level, name)
            for a in node.names:
                sub = f"{source}.{a.name}"
                if sub in MODULES:       # `from . import offline_process`
                    found.append((sub, [], node.lineno))
                    aliases[a.asname or a.name] = sub
                elif _project_module(source):
                    private = [a.name] if a.name.startswith("_") and not a.name.startswith("__") else []
                    found.append((_project_module(source), private, node.lineno))
    for node in ast.walk(tree):         # `offline_process._stage(...)` through a module alias
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append((aliases[node.value.id], [node.attr], node.lineno))
    return found


def _graph():
    return {m: {t for t, _, _ in imports_of(m) if t != m and not (m.startswith(t + ".") and _is_package(t))}
            for m in MODULES}


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _rel(module):
    return module.split(".", 1)[1] if "." in module else ""


def _ros_side(module):
    rel = _rel(module)
    return rel not in SHARED_WITH_CORE and any(rel == s or rel.startswith(s + ".") for s in ROS_SIDE)


def test_the_checker_sees_the_packages():
    assert "sam4dcap_biomech.timeseries" in MODULES and "sam4dcap_perception.cli" in MODULES
    assert any(t == "sam4dcap_biomech.timeseries" for t, _, _ in imports_of("sam4dcap_biomech.trc"))
    # A cycle and a private import are found when present.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    cycles = {frozenset(c) for c in _cycles(_graph())}
    assert not cycles - KNOWN_CYCLES, \
        f"modules importing each other (directly or around a loop): {[sorted(c) for c in cycles - KNOWN_CYCLES]}"
    assert not KNOWN_CYCLES - cycles, f"known cycles gone (remove them from KNOWN_CYCLES): {KNOWN_CYCLES - cycles}"


def test_imports_at_the_top():
    std = set(sys.stdlib_module_names)
    bad = []
    for m in MODULES:
        if _ros_side(m) or _rel(m).startswith("commands") or m in LAZY_IMPORTS_PENDING | LAZY_IMPORTS_OK:
            continue
        tree = ast.parse(MODULES[m].read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    names = [_resolve(node.module, node.level, m)]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in std or _project_module(name):
                        bad.append(f"{MODULES[m].relative_to(ROOT)}:{node.lineno} imports {name} inside {fn.name}()")
    assert not bad, "imports of project or standard-library modules inside functions (move them to the top):\n" \
        + "\n".join(sorted(set(bad)))


def test_no_private_names_across_modules():
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line} uses {t}.{p}"
           for m in MODULES for t, private, line in imports_of(m) if t != m for p in private]
    assert not bad, "private names used across modules (make them public):\n" + "\n".join(bad)


def test_core_never_imports_the_ros_side():
    bad = sorted({f"{MODULES[m].relative_to(ROOT)}:{line} imports {t}"
                  for m in MODULES if not _ros_side(m) for t, _, line in imports_of(m) if _ros_side(t)})
    assert not bad, "core modules importing ROS adapters:\n" + "\n".join(bad)


def test_biomech_never_imports_perception():
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {t}"
           for m in MODULES if m.startswith("sam4dcap_biomech")
           for t, _, line in imports_of(m) if t.startswith("sam4dcap_perception")]
    assert not bad, "sam4dcap_biomech (the base) importing sam4dcap_perception:\n" + "\n".join(bad)
