"""The package's layering, read from its source: lower layers never import higher ones, no cycles.

Layers, bottom to top (a module may import its own area and any lower layer):

    common                      shared rules (images, cases, video files, atomic writes, configs)
    models, data                the networks; the data pipeline
    pipelines, evaluation       inference; metrics
    training                    fine-tuning
    demo                        the bundled model's recipe, through the public API
    cli (every */cli.py)        argument parsing only
"""

import ast
from collections import defaultdict
from pathlib import Path

import kaleido_s2v

ROOT = Path(kaleido_s2v.__file__).parent
LAYER = {"common": 0, "models": 1, "data": 1, "pipelines": 2, "evaluation": 2, "training": 3, "demo": 4}
CLI_LAYER = 5


def _module_name(path: Path) -> str:
    return ".".join(("kaleido_s2v", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")


def _imports() -> dict[str, set[str]]:
    """Every module's imports of the package, at module level or inside functions."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kaleido_s2v."):
                graph[module].add(node.module)
            elif isinstance(node, ast.Import):
                graph[module].update(a.name for a in node.names if a.name.startswith("kaleido_s2v."))
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[-1] == "cli":
        return CLI_LAYER
    return LAYER.get(parts[1]) if len(parts) > 2 else None  # kaleido_s2v/__init__ is the facade


def test_no_module_imports_a_higher_layer():
    wrong = [
        f"{module} -> {target}"
        for module, targets in _imports().items()
        for target in targets
        if _layer(module) is not None
        and _layer(target) is not None
        and module.split(".")[1] != target.split(".")[1]
        and _layer(target) >= _layer(module)
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_the_bottom_layer_imports_nothing_else_of_the_package():
    wrong = [
        f"{module} -> {target}"
        for module, targets in _imports().items()
        if module.startswith("kaleido_s2v.common")
        for target in targets
        if not target.startswith("kaleido_s2v.common")
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = _imports()
    modules = {_module_name(p) for p in ROOT.rglob("*.py")}

    def resolve(target: str) -> str:  # `from kaleido_s2v.data import x` names the package
        return target if target in modules else target.rsplit(".", 1)[0]

    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(resolve(t) for t in graph.get(module, ())):
            if target == module or target not in modules:
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_package_imports_sit_at_module_top_outside_the_command_line_modules():
    """Inside functions only in `*/cli.py` (so `kaleido-s2v --help` stays instant) and in the package's
    lazy facade `kaleido_s2v/__init__.py`; a dependency hidden in a function hides the layering."""
    hidden = []
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        if module == "kaleido_s2v" or module.endswith(".cli"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kaleido_s2v"):
                    hidden.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert not hidden, "\n".join(hidden)
