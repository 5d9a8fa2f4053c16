"""The layers of ``bridge`` as each package's ``__init__`` states them: imports point one way only.

Read from the source (every ``import``, also inside functions), nothing is imported.
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
    "cli": {"core", "config", "app", "cli_tools", "frontends.security", "texshare"},
    "cli_tools": {"core", "config", "bench", "pipeline"},
}


def module_of(path: Path) -> str:
    parts = path.relative_to(BRIDGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The bridge modules (dotted, without ``bridge.``) that ``path`` imports."""
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
            found |= {f"{target}.{a.name}".strip(".") for a in node.names} if not node.module else {target}
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
            wrong += [f"{module} imports {n}" for n in names if n.split(".")[0] in ("torch", "diffusers", "transformers")]
    assert not wrong, "\n".join(wrong)


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
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr") \
                    and node.args and "renderer" in ast.unparse(node.args[0]):
                wrong.append(f"{module_of(path)}:{node.lineno}: {ast.unparse(node)}")
    assert not wrong, "\n".join(wrong)
