"""The layers of the code base, enforced: which part of the tree may import which.

Inside `sparseinst_core`: model <- io <- inference <- training, with `data` beside training and `scene`
(3D geometry and tracking) beside inference; `tools` (commands, benchmarks, demo) may import anything and
nothing imports them. `sparseinst_ros` is a client of the model/io/inference/scene layers only (its own
`tools` excepted), and the library never imports ROS. Imports are read with `ast`, deferred imports
inside functions included, so a layer cannot be crossed by hiding an import in a function.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sparseinst_core", "sparseinst_ros")

# layer -> the layers it may import (itself included)
ALLOWED = {
    "core.model": {"core.model"},
    "core.io": {"core.model", "core.io"},
    "core.inference": {"core.model", "core.io", "core.inference"},
    "core.scene": {"core.model", "core.io", "core.inference", "core.scene"},
    "core.data": {"core.model", "core.data"},
    "core.training": {"core.model", "core.io", "core.inference", "core.data", "core.training"},
    "core.api": {"core.model", "core.io", "core.inference", "core.api"},
    "core.tools": None,                     # anything
    "ros": {"core.api", "core.model", "core.io", "core.inference", "core.scene", "ros"},
    "ros.tools": None,
}
TOOLS = {"core.tools", "ros.tools"}
ROS_MODULES = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "std_srvs", "vision_msgs", "diagnostic_msgs",
               "visualization_msgs", "geometry_msgs", "builtin_interfaces", "lifecycle_msgs", "cv_bridge",
               "launch", "launch_ros", "rosbags")
# Command shims kept at the top of the library for `python -m sparseinst_core.<name>`.
CORE_COMMAND_SHIMS = ("export", "benchmark")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "sparseinst_core":
        if len(parts) == 1:
            return "core.api"
        if parts[1] in CORE_COMMAND_SHIMS and len(parts) == 2:
            return "core.tools"
        return f"core.{parts[1]}"
    if len(parts) > 1 and parts[1] == "tools":
        return "ros.tools"
    if parts[1:] == ["bag"]:           # the shim of `python -m sparseinst_ros.bag`: it launches a tool
        return "ros.tools"
    return "ros"


def source_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            files[module_name(path)] = path
    return files


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """Every module `module` imports (at top level or inside functions), resolved to full dotted names."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            for alias in node.names:                   # `from package import submodule`
                if f"{target}.{alias.name}" in known:
                    found.add(f"{target}.{alias.name}")
    return found


def import_graph() -> dict[str, set[str]]:
    files = source_files()
    known = set(files)
    return {module: imported_modules(module, path, known) for module, path in files.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, imports in sorted(graph.items()):
        layer = layer_of(module)
        for target in sorted(imports):
            top = target.split(".")[0]
            if module.startswith("sparseinst_core") and top in ROS_MODULES:
                problems.append(f"{module} imports {target}: the library has no ROS imports")
            if top not in PACKAGES:
                continue
            target_layer = layer_of(target)
            if target_layer in TOOLS and layer not in TOOLS:
                problems.append(f"{module} ({layer}) imports the tool {target}: nothing imports tools")
            elif ALLOWED[layer] is not None and target_layer not in ALLOWED[layer]:
                problems.append(f"{module} ({layer}) imports {target} ({target_layer})")
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), inside the packages."""
    edges = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return cycles


def test_every_module_imports_only_the_layers_below_it():
    assert layer_violations(import_graph()) == []


def test_the_import_graph_has_no_cycle():
    assert import_cycles(import_graph()) == []


@pytest.mark.parametrize("module, extra_import, expected", [
    ("sparseinst_core.model.decoder", "from ..inference.predictor import Predictor",
     "sparseinst_core.model.decoder (core.model) imports sparseinst_core.inference.predictor (core.inference)"),
    ("sparseinst_core.inference.postprocess", "from ..training import criterion",
     "imports sparseinst_core.training.criterion (core.training)"),
    ("sparseinst_core.io.checkpoint", "import rclpy", "the library has no ROS imports"),
    ("sparseinst_ros.node", "from sparseinst_core.training.engine import train_one_step", "(core.training)"),
    ("sparseinst_core.inference.predictor", "    from ..tools import demo", "nothing imports tools"),
])
def test_the_rule_catches_a_forbidden_import(module, extra_import, expected):
    """The check itself: adding one forbidden import (even inside a function) is reported."""
    graph = import_graph()
    files = source_files()
    source = files[module].read_text()
    if extra_import.startswith(" "):
        source += f"\n\ndef _added():\n{extra_import}\n"
    else:
        source = f"{extra_import}\n{source}"
    patched = files[module].with_name(f"_patched_{files[module].name}")
    patched.write_text(source)
    try:
        graph[module] = imported_modules(module, patched, set(files))
    finally:
        patched.unlink()
    violations = layer_violations(graph)
    assert any(expected in v for v in violations), violations


def test_a_cycle_is_reported():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
