"""The one-way layers of STYLE.md, and the explicit public API."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Rank of each clt_gen module: a module may import only modules of lower or equal rank.
LAYER = {
    "_version": 0,
    "errors": 0,
    "_io": 0,
    "_modes": 0,
    "_parallel": 0,
    "duality": 1,
    "pac_bayes": 1,
    "gibbs": 4,
    "testing": 2,
    "data": 2,
    "sources": 2,
    "streaming": 4,
    "profiles": 5,
    "render": 5,
    "models": 2,
    "checkpoints": 3,
    "callbacks": 3,
    "training": 4,
    "features": 4,
    "trainability": 4,
    "bounds": 5,
    "evaluation": 6,
    "loading": 3,
    "population": 6,
    "report": 5,
    "demo": 8,
    "sweep": 8,
    "compare": 7,
    "measures": 4,
    "cli": 9,
}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _module_name(path: pathlib.Path, package: str) -> str:
    rel = path.relative_to(ROOT / package).with_suffix("")
    return rel.parts[0] if rel.parts[0] != "__init__" else "__init__"


def test_estimators_never_import_clt_gen():
    for path in (ROOT / "estimators").rglob("*.py"):
        bad = {m for m in _imports(path) if m == "clt_gen" or m.startswith("clt_gen.")}
        assert not bad, f"{path} imports {bad}: estimators must not depend on clt_gen"


def test_clt_gen_layers_are_one_way():
    for path in (ROOT / "clt_gen").rglob("*.py"):
        mod = _module_name(path, "clt_gen")
        if mod == "__init__":
            continue
        assert mod in LAYER, f"clt_gen/{mod} has no layer in tests/test_architecture.py"
        for imp in _imports(path):
            if not imp.startswith("clt_gen."):
                continue
            target = imp.split(".")[1]
            assert LAYER[target] <= LAYER[mod], (
                f"clt_gen.{mod} (layer {LAYER[mod]}) imports clt_gen.{target} "
                f"(layer {LAYER[target]}): a back-edge"
            )


def _graph(package: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        mod = _module_name(path, package)
        deps = graph.setdefault(mod, set())
        for imp in _imports(path):  # module-level and function-level imports alike
            if imp.startswith(package + "."):
                dep = imp.split(".")[1]
                if dep != mod:
                    deps.add(dep)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every back-edge of a depth-first walk, as the cycle it closes."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                found.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_cycle_detection_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["clt_gen", "estimators"])
def test_no_import_cycle(package):
    assert _cycles(_graph(package)) == []


def test_bounds_and_estimators_take_no_models():
    for path in [ROOT / "clt_gen" / "bounds.py", *(ROOT / "estimators").rglob("*.py")]:
        if path.exists():
            banned = {"clt_gen.models", "clt_gen.checkpoints", "clt_gen.features"}
            assert not (_imports(path) & banned), f"{path} imports network code"


@pytest.mark.parametrize(
    "module",
    sorted(
        {f"clt_gen.{p.stem}" for p in (ROOT / "clt_gen").glob("*.py") if not p.stem.startswith("_")}
        | {
            f"estimators.{p.stem}"
            for p in (ROOT / "estimators").glob("*.py")
            if not p.stem.startswith("_")
        }
        | {"clt_gen", "estimators"}
    ),
)
def test_all_is_explicit_and_resolvable(module):
    mod = importlib.import_module(module.replace(".__init__", ""))
    assert hasattr(mod, "__all__"), f"{module} must define __all__"
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ lists {name!r}, which does not exist"


def test_no_library_function_over_80_lines():
    long = set()
    for package in ("clt_gen", "estimators"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if node.end_lineno - node.lineno + 1 > 80:
                        long.add((str(path.relative_to(ROOT)), node.name))
    assert not long, f"functions over 80 lines (split them into named steps): {sorted(long)}"


def test_bounds_and_estimators_do_not_import_torch():
    import subprocess
    import sys

    for module in ("estimators", "clt_gen.bounds", "clt_gen.report"):
        code = f"import sys, {module}; print('torch' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.stdout.strip() == "False", f"import {module} loads torch: {out.stderr}"


# Classes users build or receive directly carry an example too; the result records
# inside a Report (rows, estimates, bounds) are shown by the Report's own example.
ENTRY_CLASSES = {"Report", "EvaluateConfig", "TrainConfig", "DataConfig"}


def _sections(doc: str) -> set[str]:
    lines = doc.splitlines()
    return {
        a.strip()
        for a, b in zip(lines, lines[1:], strict=False)
        if b.strip() and set(b.strip()) == {"-"} and len(b.strip()) == len(a.strip())
    }


def _public_objects():
    import inspect

    for package in ("clt_gen", "estimators"):
        mod = importlib.import_module(package)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if name.startswith("__") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if inspect.isclass(obj) and issubclass(obj, Exception):
                continue
            yield f"{package}.{name}", obj


def test_public_api_has_numpy_docstrings():
    import inspect

    missing = []
    for qualname, obj in _public_objects():
        doc = inspect.getdoc(obj) or ""
        have = _sections(doc)
        want = set()
        if inspect.isfunction(obj):
            params = [p for p in inspect.signature(obj).parameters if p != "self"]
            want |= {"Parameters"} if params else set()
            want |= {"Returns", "Examples"}
        else:
            fields = getattr(obj, "__dataclass_fields__", {})
            if fields and not have & {"Attributes", "Parameters"}:
                want.add("Attributes")
            if obj.__name__ in ENTRY_CLASSES:
                want.add("Examples")
        if want - have:
            missing.append(f"{qualname}: {sorted(want - have)}")
    assert not missing, "public callables without numpydoc sections:\n" + "\n".join(missing)


def test_rendering_leaves_matplotlib_global_state_alone():
    import subprocess
    import sys

    code = (
        "import sys, matplotlib; matplotlib.use('svg')\n"
        "from clt_gen.render import render_html\n"
        "from clt_gen.report import example_report_dict\n"
        "assert '<img' in render_html(example_report_dict())\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
