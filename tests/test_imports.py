"""fastfp's modules import each other without a loop, the core leaves the harness alone,
and no module reads another's private (underscored) attributes.

Every ``import`` and ``from ... import`` statement of every module counts, those inside
functions too (a lazy import is still a dependency). A package's ``__init__`` counts as
the module of the package's name.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import fastfp

SRC = Path(fastfp.__file__).resolve().parent
#: the core: frames, neighbours, kernels, descriptors, Fingerprints, store and config
CORE = ("fastfp.frames", "fastfp.neighbors", "fastfp.kernels", "fastfp.descriptors", "fastfp.fingerprints",
        "fastfp.store", "fastfp.config", "fastfp.atomic", "fastfp.threads", "fastfp.harmonics",
        "fastfp.pseudodensity")


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = ("fastfp",) + path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """``{module: {fastfp modules it imports}}``."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def _cycle(graph) -> list[str] | None:
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_import_loop():
    graph = import_graph()
    assert "fastfp.harness.profile" in graph and "fastfp.harness.summarise" in graph["fastfp.harness.profile"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_finder_finds_a_loop():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_core_imports_no_benchmark_code():
    graph = import_graph()
    for name, edges in graph.items():
        if name.startswith(CORE):
            assert not any(e.startswith("fastfp.harness") for e in edges), (name, edges)


def test_no_file_found_by_the_package_path():
    """The installed package never looks for files relative to where it is installed."""
    for name, path in _modules().items():
        assert "parents[" not in path.read_text(), name


# -- the public face ------------------------------------------------------------------------


def test_public_names():
    """``fastfp.__all__`` resolves, and its errors are exactly the classes of ``fastfp.errors``."""
    import inspect

    import fastfp.errors

    for name in fastfp.__all__:
        assert getattr(fastfp, name) is not None, name
    errors = {name for name, obj in vars(fastfp.errors).items() if inspect.isclass(obj) and issubclass(obj, Exception)}
    assert errors == {name for name in fastfp.__all__ if name.endswith("Error")}
    for name in errors:  # one home: other modules import them
        for module, path in _modules().items():
            assert f"class {name}(" not in path.read_text() or module == "fastfp.errors", (name, module)


def test_version():
    from importlib.metadata import version

    assert fastfp.__version__ == version("fastfp")
    res = subprocess.run([sys.executable, "-m", "fastfp", "--version"], capture_output=True, text=True, env=_env())
    assert res.returncode == 0 and res.stdout.strip() == f"fastfp {fastfp.__version__}", res


def test_import_fastfp_leaves_optional_libraries_alone():
    """``import fastfp`` imports neither matscipy (the benchmark workload's, an extra) nor
    the GPU, torch or Dask libraries."""
    code = ("import sys, fastfp; print(sorted(m for m in ('matscipy', 'torch', 'cupy', 'numba_cuda', 'distributed') "
            "if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert res.returncode == 0 and res.stdout.strip() == "[]", res


def test_readme_uses_public_paths():
    """Every ``fastfp.<name>`` the README names is public: in ``fastfp.__all__`` or
    ``fastfp.amptorch.__all__`` (or that module itself)."""
    import fastfp.amptorch

    readme = (SRC.parents[1] / "README.md").read_text()
    public = {"fastfp.amptorch"} | {f"fastfp.{n}" for n in fastfp.__all__} | {
        f"fastfp.amptorch.{n}" for n in fastfp.amptorch.__all__} | {"fastfp.__version__"}
    named = set(re.findall(r"(?<![\w/])fastfp(?:\.\w+)+", readme))
    assert named and named <= public, sorted(named - public)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC.parent), os.environ.get("PYTHONPATH", "")]))


def test_amptorch_lmdb_names():
    """``fastfp.amptorch`` gives the LMDB writers by name, importing torch only then."""
    import pytest

    pytest.importorskip("torch_geometric", reason="the LMDB writers need the 'torch' extra")
    import fastfp.amptorch
    from fastfp.amptorch import lmdb

    for name in ("write_lmdb", "write_lmdb_shards", "lmdb_paths"):
        assert getattr(fastfp.amptorch, name) is getattr(lmdb, name)
    with pytest.raises(AttributeError, match="no attribute 'lmdb_path'"):
        fastfp.amptorch.lmdb_path


def test_readme_outputs_are_ignored():
    """What the README's examples write in the repository (``--out``, ``tee``, the stores
    and LMDBs its Python examples name) is git-ignored."""
    import pytest

    root = SRC.parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    readme = (root / "README.md").read_text()
    outputs = (set(re.findall(r"--out\s+([^\s`]+)", readme)) | set(re.findall(r"\btee\s+([^\s`]+)", readme))
               | set(re.findall(r'"([\w.-]+\.(?:store|lmdb))"', readme)))
    outputs = sorted(o for o in outputs if not o.startswith("/"))  # absolute paths are elsewhere
    res = subprocess.run(["git", "check-ignore", "--no-index", *outputs], cwd=root, capture_output=True, text=True)
    assert outputs and sorted(res.stdout.split()) == outputs, (outputs, res.stdout)


#: underscored names of other libraries' public API: torch's sparse COO tensors
PUBLIC_UNDERSCORED = {"_values", "_indices", "_nnz"}


def private_reads(source: str) -> list[str]:
    """``obj._name`` reads in ``source`` (Python) of private names it does not define
    itself (as a function, class, attribute assignment or keyword argument), ``obj``
    being anything but ``self`` or ``cls``."""
    tree = ast.parse(source)
    defined = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            defined.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            defined.add(node.arg)
    return [ast.unparse(node) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            and node.attr not in defined | PUBLIC_UNDERSCORED]


def test_no_module_reads_another_modules_private_attributes():
    found = {name: reads for name, path in _modules().items() if (reads := private_reads(path.read_text()))}
    assert not found, found


def test_private_reads_are_found():
    assert private_reads("def f(desc):\n    return desc._piece_ptr, desc.tables, self._x") == ["desc._piece_ptr"]
    assert private_reads("class A:\n    def _t(self):\n        pass\n\n\ndef f(a):\n    return a._t()") == []
