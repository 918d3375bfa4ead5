"""The package's import graph: no cycle, and no module imports one above it (STYLE.md).

The graph is read from the source with `ast` (nothing is executed), counting every import of a
`keras_spectralkd` module, function-local ones included: a deferred import that reaches up is
still a dependency. `from keras_spectralkd.x import y` depends on the module `keras_spectralkd.x.y`
when that is a module, else on `keras_spectralkd.x`. The implicit execution of parent packages'
`__init__` is not counted (it would put every subpackage in a cycle with its own `__init__`).

Layers, bottom to top. A module may import its own part of the package (acyclically) and any part
in a lower layer; parts in the same layer are independent and may not import each other:

0. `_startup` (quiet imports of Keras / TensorFlow) and `_keras_internals` (Keras' private API
   behind a version gate): helpers that know nothing of ours.
1. `spectral` (the loss math), `models` (backbones, and loading their weights: `models.create`
   and its timm conversion, `models/timm/`), `data` (input pipelines): the three sources that
   data flows out of (data -> model -> loss), each needing nothing else of ours above layer 0;
   beside them `_low_precision` (a model's bfloat16/float16 copy, for the Distiller's teacher)
   and `taps` (named layers' maps of any functional model, for the Distiller and the analysis).
2. `convert` (the public name of the timm conversion in `models`), `distiller` (models +
   spectral loss), `teacher_cache` (a frozen teacher's outputs computed once, fed to the
   Distiller), `analysis` (reads backbones' maps), `training` (schedules, optimizer, EMA,
   checkpoints, the fit loop: generic Keras utilities; they may know about models, never about
   a particular application).
3. `callbacks`: the spectral TensorBoard panels, built on the analysis and the loss.
4. the package's `__init__`: the public API, resolving names from the layers below on first use.
5. `recipes`: the application (the runner and the paper's recipe table), using everything.
6. `tools`: command-line tools, which may run recipes.

A new part of the package must be placed here before its first import is accepted.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

PACKAGE = "keras_spectralkd"
ROOT = pathlib.Path(__file__).resolve().parent.parent / PACKAGE
API = "(the package __init__)"
LAYERS = [
    ("_startup", "_keras_internals", "precision"),
    ("spectral", "models", "data", "_low_precision", "taps"),
    ("convert", "distiller", "teacher_cache", "analysis", "training"),
    ("callbacks", "distillation_loss"),
    (API,),
    ("recipes",),
    ("tools",),
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


# === Reading the graph ===
def package_modules(root=ROOT):
    """Dotted module name -> source path, for every .py file of the package."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (PACKAGE,) + path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def import_graph(modules):
    """Module -> {imported package module: line number of the first such import}."""
    graph = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for target in _targets(node, name, is_package, modules):
                if target != name:
                    edges.setdefault(target, node.lineno)
    return graph


def _targets(node, module, is_package, modules):
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if _ours(alias.name)]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: resolve against the importing module's package
        package = module.split(".")
        if not is_package:
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    if not _ours(base):
        return []
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        targets.append(submodule if submodule in modules else base)
    return targets


def _ours(name):
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def part_of(module):
    """The layer part of a module: `keras_spectralkd.models.vit` -> "models"; the root -> API."""
    parts = module.split(".")
    return API if len(parts) == 1 else parts[1]


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def upward_imports(graph, part):
    """The imports of `part`'s modules that reach a part in the same or a higher layer."""
    wrong = []
    for module in sorted(graph):
        if part_of(module) != part:
            continue
        for target, line in sorted(graph[module].items()):
            target_part = part_of(target)
            if target_part != part and RANK[target_part] >= RANK[part]:
                where = (
                    f"a peer in layer {RANK[part]} (peers are independent)"
                    if RANK[target_part] == RANK[part]
                    else f"in layer {RANK[target_part]}, above {part!r} (layer {RANK[part]})"
                )
                wrong.append(f"{module} (line {line}) imports {target}: {target_part!r} is {where}")
    return wrong


MODULES = package_modules()
GRAPH = import_graph(MODULES)
PARTS = sorted({part_of(module) for module in MODULES})


# === The rules ===
# Violations known and accepted, each with why; none today (strict xfails: a fixed violation
# fails here until its entry goes).
KNOWN = {"cycle": {}, "layer": {}}


def _cases(kind):
    return [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=KNOWN[kind][p]))
        if p in KNOWN[kind]
        else p
        for p in PARTS
    ]


def test_every_part_of_the_package_has_a_layer():
    unplaced = sorted(part for part in PARTS if part not in RANK)
    assert not unplaced, (
        f"Parts of {PACKAGE} without a layer: {unplaced}; add each to LAYERS in "
        f"{os.path.basename(__file__)} (below everything that imports it)."
    )


@pytest.mark.parametrize("part", _cases("cycle"))
def test_no_import_cycle(part):
    touching = [cycle for cycle in cycles(GRAPH) if any(part_of(m) == part for m in cycle)]
    assert not touching, f"Import cycles through {part!r}: {touching}"


@pytest.mark.parametrize("part", _cases("layer"))
def test_no_module_imports_one_above_it(part):
    if part not in RANK:
        pytest.fail(f"{part!r} has no layer (see test_every_part_of_the_package_has_a_layer)")
    wrong = upward_imports(GRAPH, part)
    assert not wrong, "Imports that reach up:\n" + "\n".join(wrong)


def test_the_checks_find_what_they_look_for(tmp_path):
    # A tiny package with one cycle, one upward import and one relative import: the readers and
    # the checks must see all three, or the tests above could not fail.
    files = {
        "__init__.py": "from keras_spectralkd.distiller import Distiller\n",
        "spectral.py": "def f():\n    from keras_spectralkd import distiller\n",
        "distiller.py": "from . import spectral\nfrom keras_spectralkd.models import vit\n",
        "models/__init__.py": "",
        "models/vit.py": "from .layers import Block\n",
        "models/layers.py": "import keras_spectralkd.models.vit\n",
    }
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    modules = package_modules(tmp_path)
    graph = import_graph(modules)
    assert graph["keras_spectralkd.distiller"] == {
        "keras_spectralkd.spectral": 1,
        "keras_spectralkd.models.vit": 2,
    }
    assert graph["keras_spectralkd"] == {"keras_spectralkd.distiller": 1}
    assert cycles(graph) == [
        ["keras_spectralkd.distiller", "keras_spectralkd.spectral"],
        ["keras_spectralkd.models.layers", "keras_spectralkd.models.vit"],
    ]
    assert upward_imports(graph, "spectral") == [
        "keras_spectralkd.spectral (line 2) imports keras_spectralkd.distiller: 'distiller' is in "
        "layer 2, above 'spectral' (layer 1)"
    ]
    assert upward_imports(graph, "distiller") == []  # spectral and models lie below


# === What importing costs ===
@pytest.mark.slow  # a fresh interpreter importing every module: 15-30 s on 2 busy cores
def test_the_package_imports_without_matplotlib():
    """matplotlib is needed by the plotting functions only, so it is imported inside them.

    Keras 3.15 itself imports matplotlib when it is installed (keras.src.visualization), so
    "not in sys.modules" cannot be asserted; instead matplotlib is made unimportable: every module
    of the package must still import, and a plotting function must be what asks for it.
    """
    script = f"""
import importlib, pkgutil, sys
sys.modules["matplotlib"] = None  # importing it now raises ImportError
sys.modules.setdefault("triton", None)  # see tests/conftest.py
import {PACKAGE}
for module in pkgutil.walk_packages({PACKAGE}.__path__, "{PACKAGE}."):
    importlib.import_module(module.name)
import numpy as np
from {PACKAGE} import analysis
profile = analysis.profile_maps([np.ones((1, 1, 1, 2))], entropy=False)
try:
    analysis.plot_intensity(profile)
except ImportError as error:
    print("plotting needs matplotlib:", error)
"""
    path = [str(ROOT.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "plotting needs matplotlib: import of matplotlib halted" in result.stdout, result.stdout
