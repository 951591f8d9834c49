"""slapp's modules import each other without a cycle, and only the demo imports the demo.

Every import counts, also one inside a function (a deferred import hides a
cycle; it does not remove it).
"""
import ast
from pathlib import Path

import slapp

PACKAGE = Path(slapp.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def resolve(name: str) -> str | None:
    """The slapp module a dotted name lives in (a module, or a name inside one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """The slapp modules ``module`` imports, anywhere in its code."""
    found = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        found.update(target for name in names if name.startswith("slapp")
                     and (target := resolve(name)) not in (None, module, "slapp"))
    return found


GRAPH = {module: imports(module) for module in MODULES}


def find_cycle() -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(GRAPH):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_graph_is_read_from_every_module():
    assert len(MODULES) > 40
    assert "slapp.segmentation.store" in GRAPH["slapp.segmentation.segment"]


def test_no_module_imports_itself_back():
    assert find_cycle() is None, " -> ".join(find_cycle())


def test_only_the_demo_imports_the_demo():
    outside = {module: sorted(target for target in targets if target.startswith("slapp.demo"))
               for module, targets in GRAPH.items() if not module.startswith("slapp.demo")}
    assert {module: targets for module, targets in outside.items() if targets} == {}


def test_the_contracts_import_no_command():
    for module in (name for name in GRAPH if name.startswith("slapp.contracts")):
        assert all(target.startswith(("slapp.contracts", "slapp.errors", "slapp.utils"))
                   for target in GRAPH[module]), (module, GRAPH[module])
