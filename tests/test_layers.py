"""The layers of ``bridge`` as each package's ``__init__`` states them: imports point one way only,
and no modules (or packages) import each other in a circle.

Read from the source (every ``import``, also inside functions and under ``TYPE_CHECKING``), nothing
is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[1] / "bridge"

# What each package may import from the rest of bridge (itself always). A package not listed here
# may import what its parent may.
ALLOWED = {
    "core": set(),
    "client": set(),
    "texshare": {"core"},
    "outputs": {"core", "client", "texshare"},
    "engine": {"core", "client"},
    "frontends": {"core", "client", "engine", "outputs", "frontends"},
    "frontends.http": {"core", "client", "engine", "outputs", "texshare", "frontends.security"},
    "frontends.osc": {"core", "client", "engine", "frontends.security"},
    "pipeline": {"core"},
    "pipeline.speed": {"core"},
    "pipeline.families": {"core"},
    "pipeline.loading": {"core", "pipeline.families", "pipeline.speed"},
    "pipeline.steering": {"core", "pipeline.families", "pipeline.speed", "pipeline.loading"},
    "pipeline.render": {"core", "pipeline"},
    "bench": {"core", "client", "outputs", "pipeline"},
    "cluster": {"core"},
    "app": {"core", "client", "engine", "outputs", "texshare", "frontends", "pipeline", "cluster", "config"},
    "config": {"core"},
    "cli": {"core", "config", "app", "cli_serve", "cli_tools", "frontends.security"},
    "cli_serve": {"core", "config", "app", "texshare"},
    "cli_tools": {"core", "config", "bench", "pipeline"},
}


def module_of(path: Path) -> str:
    parts = path.relative_to(BRIDGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_of(path): path for path in sorted(BRIDGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """The bridge modules (dotted, without ``bridge.``) that ``path`` imports: ``from pkg import mod``
    is ``pkg.mod``, ``from pkg.mod import name`` is ``pkg.mod``."""
    here = module_of(path).split(".") if module_of(path) else []
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("bridge"):
                target = node.module.removeprefix("bridge").lstrip(".")
            else:
                continue
            named = {f"{target}.{a.name}".strip(".") for a in node.names}
            found |= named if not node.module else {n if n in MODULES else target for n in named}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("bridge").lstrip(".") for a in node.names if a.name.startswith("bridge.")}
    return found


def rule_for(module: str) -> tuple[str, set[str]]:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in ALLOWED:
            return ".".join(parts[:n]), ALLOWED[".".join(parts[:n])]
    return "", set(ALLOWED)  # the top: __init__, __main__


def within(target: str, allowed: set[str]) -> bool:
    return any(target == a or target.startswith(a + ".") for a in allowed)


def test_every_import_points_inward():
    wrong = []
    for path in sorted(BRIDGE.rglob("*.py")):
        module = module_of(path)
        owner, allowed = rule_for(module)
        for target in imports(path):
            if not target or within(target, {owner}) or within(target, allowed):
                continue
            wrong.append(f"{module} imports {target} ({owner or 'bridge'} may import {sorted(allowed)})")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_torch_outside_the_pipeline_and_the_benchmarks():
    wrong = []
    for path in sorted(BRIDGE.rglob("*.py")):
        module = module_of(path)
        if module.startswith(("pipeline", "bench")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            wrong += [f"{module} imports {n}" for n in names
                      if n.split(".")[0] in ("torch", "diffusers", "transformers")]
    assert not wrong, "\n".join(wrong)


def module_graph() -> dict[str, set[str]]:
    """Each bridge module -> the bridge modules it imports (a name's module: its longest known prefix)."""
    def known(target: str) -> str | None:
        parts = target.split(".")
        return next((m for n in range(len(parts), 0, -1) if (m := ".".join(parts[:n])) in MODULES), None)

    return {module: {m for t in imports(path) if (m := known(t)) not in (None, module)}
            for module, path in MODULES.items()}


def package_graph() -> dict[str, set[str]]:
    """The module graph folded into packages (a module of the top, such as ``cli``, stands alone)."""
    def package(module: str) -> str:
        return module if MODULES[module].name == "__init__.py" or "." not in module else module.rsplit(".", 1)[0]

    folded: dict[str, set[str]] = {}
    for module, targets in module_graph().items():
        folded.setdefault(package(module), set()).update(package(t) for t in targets)
    return {p: targets - {p} for p, targets in folded.items()}


def circles(graph: dict[str, set[str]]) -> list[str]:
    """Every circle of ``graph`` (nodes that reach each other), named by one shortest loop through its
    first node and, where the circle is bigger than that loop, all of its nodes."""
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for n in graph[todo.pop()] - seen:
                seen.add(n)
                todo.append(n)
        return seen

    reached = {node: reach(node) for node in graph}
    found, placed = [], set()
    for node in sorted(graph):
        if node in placed or node not in reached[node]:
            continue
        members = {n for n in reached[node] if node in reached[n]}
        placed |= members
        loop = shortest_loop(graph, node, members)
        named = " -> ".join(loop)
        found.append(named if len(loop) - 1 == len(members) else f"{named} (the circle: {', '.join(sorted(members))})")
    return found


def shortest_loop(graph: dict[str, set[str]], start: str, members: set[str]) -> list[str]:
    """The fewest imports from ``start`` back to it, through ``members`` (its circle)."""
    paths, todo = {start: [start]}, [start]
    for here in todo:  # breadth first: todo grows while it is read
        for n in sorted(graph[here] & members):
            if n == start:
                return paths[here] + [start]
            if n not in paths:
                paths[n] = paths[here] + [n]
                todo.append(n)
    raise AssertionError(f"{start} is in no circle")


def test_no_modules_import_each_other_in_a_circle():
    """A circle is broken by moving the shared type or protocol inward, or by passing a callable in from
    ``app``; never by hiding one of its imports inside a function (this test reads those too)."""
    found = circles(module_graph())
    assert not found, "import circles between modules:\n" + "\n".join(found)


def test_no_packages_import_each_other_in_a_circle():
    found = circles(package_graph())
    assert not found, "import circles between packages:\n" + "\n".join(found)


def test_a_circle_is_found_and_named_by_its_loop():
    """The finder itself, on a graph with two circles (one bigger than its shortest loop) and a tail."""
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"e", "c"}, "e": {"c"}, "f": {"a"}}
    assert circles(graph) == ["a -> b -> a", "c -> d -> c (the circle: c, d, e)"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_every_package_says_what_lives_there_and_what_it_may_import():
    for init in sorted(BRIDGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc, f"{init.relative_to(BRIDGE.parent)} has no docstring"
        if init.parent != BRIDGE:
            assert "import" in doc, f"{init.relative_to(BRIDGE.parent)} does not say what it may import"


def test_the_engine_and_the_app_ask_a_renderer_only_through_its_contract():
    """No ``hasattr``/``getattr`` probe of a renderer (or what it holds) in ``engine`` or ``app``: what
    they may ask is ``bridge.core.renderer.Renderer``."""
    wrong = []
    for path in sorted([*(BRIDGE / "engine").rglob("*.py"), *(BRIDGE / "app").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("hasattr", "getattr") and node.args \
                    and "renderer" in ast.unparse(node.args[0]):
                wrong.append(f"{module_of(path)}:{node.lineno}: {ast.unparse(node)}")
    assert not wrong, "\n".join(wrong)
