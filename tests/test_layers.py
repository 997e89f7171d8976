"""The package's shape: imports flow down the layers, modules and functions stay small.

Layers, highest first (pyproject.toml ``[tool.importlinter]``): cli → bench → integrations →
studies → reports → runs → probe → truth → estimators → groups → geometry → sampling → files. A
lower layer never imports a higher one, directly or through another module (import-linter
follows chains). Own-package imports sit at module top, so the layering is visible and checked;
the only ones allowed inside a function are those that defer a heavy optional dependency (jax,
numpyro, devinterp, lightning, transformers), listed in ``DEFERRED``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slt_probe.files import load_toml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "slt_probe"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# own modules that import a heavy optional dependency at their top, and may therefore be
# imported inside the one function that needs them
LAYERS = (
    "slt_probe.cli",
    "slt_probe.bench",
    "slt_probe.integrations",
    "slt_probe.studies",
    "slt_probe.reports",
    "slt_probe.runs",
    "slt_probe.probe",
    "slt_probe.truth",
    "slt_probe.estimators",
    "slt_probe.groups",
    "slt_probe.geometry",
    "slt_probe.sampling",
    "slt_probe.files",
)
DEFERRED = {
    "slt_probe.estimators.devinterp_backend",
    # Lightning / Transformers are optional extras: the benchmark that needs one imports it
    "slt_probe.integrations.lightning",
    "slt_probe.integrations.transformers",
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _own(name: str | None) -> bool:
    return bool(name) and (name == "slt_probe" or name.startswith("slt_probe."))


def function_sizes(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, number of lines) of every function and method in ``source``, its
    docstring not counted (a docstring states the contract; the limit is on code)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        n = node.end_lineno - node.lineno + 1
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            if isinstance(first.value.value, str):
                n -= first.end_lineno - first.lineno + 1
        out.append((node.name, node.lineno, n))
    return out


def imports_in_functions(source: str) -> list[tuple[int, str]]:
    """(line, module) of every own-package import inside a function body of ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.ImportFrom) and _own(sub.module):
                found += [(sub.lineno, sub.module)]
            elif isinstance(sub, ast.Import):
                found += [(sub.lineno, a.name) for a in sub.names if _own(a.name)]
    return sorted(set(found))


def guarded_own_imports(source: str) -> list[int]:
    """Lines of ``try`` blocks that import an own module and catch ImportError."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Try):
            continue
        own = any(
            (isinstance(s, ast.ImportFrom) and _own(s.module))
            or (isinstance(s, ast.Import) and any(_own(a.name) for a in s.names))
            for stmt in node.body
            for s in ast.walk(stmt)
        )
        catches = any(
            h.type is not None and "ImportError" in ast.unparse(h.type) for h in node.handlers
        )
        if own and catches:
            lines.append(node.lineno)
    return lines


def test_checkers_see_what_they_look_for():
    src = (
        "import os\n"
        "def f():\n"
        "    from slt_probe.files import json_clean\n"
        "    import slt_probe.truth\n"
        "    from numpy import pi\n"
        "    try:\n"
        "        from slt_probe import reports\n"
        "    except (ImportError, OSError):\n"
        "        pass\n"
        "    return 1\n"
    )
    assert imports_in_functions(src) == [
        (3, "slt_probe.files"),
        (4, "slt_probe.truth"),
        (7, "slt_probe"),
    ]
    assert guarded_own_imports(src) == [6]
    assert function_sizes(src) == [("f", 2, 9)]
    documented = 'def g():\n    """Two lines\n    of contract."""\n    return 1\n'
    assert function_sizes(documented) == [("g", 1, 2)]


def test_import_linter_layers_contract_is_kept():
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.fail(f"{exe} not found: install the dev extra (pip install -e '.[dev]')")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [str(exe), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert "Contracts: 1 kept, 0 broken." in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0


def _size_problems(paths: list[Path]) -> list[str]:
    too_long = []
    for path in paths:
        source = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {len(source.splitlines())} lines")
        too_long += [
            f"{rel}:{line} {name}(): {n} lines"
            for name, line, n in function_sizes(source)
            if n > MAX_FUNCTION_LINES
        ]
    return too_long


def _import_problems(paths: list[Path]) -> list[str]:
    inside, guarded = [], []
    for path in paths:
        source = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        inside += [
            f"{rel}:{line} imports {mod}"
            for line, mod in imports_in_functions(source)
            if mod not in DEFERRED
        ]
        guarded += [
            f"{rel}:{line} imports under except ImportError" for line in guarded_own_imports(source)
        ]
    return inside + guarded


def _layer(module: str) -> int | None:
    """Index of ``module``'s layer in LAYERS (0 the highest), None outside every layer."""
    for i, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            return i
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def upward_imports(module: str, source: str) -> list[tuple[int, str]]:
    """(line, name) of every direct import in ``source`` (the code of ``module``) of a layer
    higher than ``module``'s own, anywhere in the module."""
    own = _layer(module)
    if own is None:
        return []
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _own(node.module):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if _own(a.name)]
        found += [(node.lineno, n) for n in names if _layer(n) is not None and _layer(n) < own]
    return found


def test_layers_agree_with_the_import_linter_contract():
    contract = load_toml(ROOT / "pyproject.toml")["tool"]["importlinter"]["contracts"][0]
    assert contract["type"] == "layers"
    assert contract["layers"] == list(LAYERS)


def test_no_module_imports_a_higher_layer():
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _modules()
        for line, name in upward_imports(_module_name(path), path.read_text(encoding="utf-8"))
    ]
    assert not found, "\n".join(found)


def test_upward_import_checker_sees_one():
    src = (
        "from slt_probe.files import json_clean\n"
        "def f():\n"
        "    from slt_probe.probe.probe import LLCProbe\n"
        "    import slt_probe.cli\n"
    )
    assert upward_imports("slt_probe.truth.nuts", src) == [
        (3, "slt_probe.probe.probe"),
        (3, "slt_probe.probe.probe.LLCProbe"),
        (4, "slt_probe.cli"),
    ]
    assert upward_imports("slt_probe.cli.bench", src) == []


def test_modules_and_functions_are_small():
    problems = _size_problems(_modules())
    assert not problems, "\n".join(problems)


def test_own_imports_are_at_module_top():
    problems = _import_problems(_modules())
    assert not problems, "\n".join(problems)


def test_importing_the_package_loads_no_heavy_optional_dependency():
    code = (
        "import sys, slt_probe, slt_probe.truth, slt_probe.reports, slt_probe.bench.speed\n"
        "print(sorted(m for m in ('jax', 'numpyro', 'devinterp') if m in sys.modules))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
