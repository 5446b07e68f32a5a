"""The shape of netrain/, read from the source (not by importing it): no import cycles among
module-level imports; every import, lazy ones too, goes down the stages that netrain/'s
docstring orders; no module imports another's private names; and only the MLflow doors
import mlflow."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "netrain"


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """Statements run on import: the body, and the bodies of top-level if/try blocks
    (except ``if TYPE_CHECKING:``)."""
    out: list[ast.stmt] = []
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        out.append(node)
        if isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody
            for h in node.handlers:
                todo += h.body
    return out


def _import_nodes(tree: ast.Module, lazy: bool) -> list[ast.stmt]:
    if not lazy:
        return _top_level(tree)
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.stmt) and id(n) not in skip]


def _resolve(node: ast.ImportFrom, package: str) -> str:
    base = node.module or ""
    if node.level:
        anchor = package.split(".")
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    return base


def imports(path: Path, modules: set[str], lazy: bool = False) -> set[str]:
    """The netrain modules ``path`` imports at module level (``lazy``: anywhere, inside
    functions too; never under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in _import_nodes(tree, lazy):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, package)
            for a in node.names:
                if f"{base}.{a.name}" in modules:
                    out.add(f"{base}.{a.name}")  # from netrain import executor
                elif base in modules:
                    out.add(base)  # from netrain.define.batch import Batch
    out.discard(me)
    return out


def _files() -> list[Path]:
    return [p for p in PKG.rglob("*.py") if "templates" not in p.parts]


def import_graph(lazy: bool = False) -> dict[str, set[str]]:
    files = _files()
    modules = {module_name(p) for p in files}
    return {module_name(p): imports(p, modules, lazy) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*path[path.index(m):], m]
            if m not in state and (found := visit(m)):
                return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_checker_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_is_read_from_the_source() -> None:
    g = import_graph()
    assert "netrain.define.batch" in g["netrain.execute.executor"]
    assert "netrain.cli.context" in g["netrain.cli.common"]
    # imported lazily, inside a function
    assert "netrain.track.mlflow_store" not in g["netrain.execute.heal"]
    assert "netrain.track.mlflow_store" in import_graph(lazy=True)["netrain.execute.heal"]


def test_no_import_cycles_in_netrain() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def stage_ranks() -> dict[str, int]:
    """The stages and their order, as netrain/__init__.py's docstring writes them: a line
    ``stages, bottom to top: track < define < execute < train, results < cli``."""
    doc = ast.get_docstring(ast.parse((PKG / "__init__.py").read_text())) or ""
    line = next(ln for ln in doc.splitlines() if ln.startswith("stages, bottom to top:"))
    ranks: dict[str, int] = {}
    for rank, group in enumerate(line.split(":", 1)[1].split("<")):
        for name in group.replace(" ", "").strip().split(","):
            ranks[name] = rank
    return ranks


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None  # netrain.<stage>.<module>


def layering_violations(graph: dict[str, set[str]], ranks: dict[str, int]) -> list[str]:
    """Imports that go up the stages or sideways between stages of one rank; a top-level
    module (netrain.errors, netrain.app) may be imported by any stage only if it imports no
    stage itself."""
    bad = []
    for mod, deps in sorted(graph.items()):
        s = stage_of(mod)
        for dep in sorted(deps):
            t = stage_of(dep)
            if s is None or t is None:
                if s is not None and t is None and any(stage_of(d) for d in graph.get(dep, ())):
                    bad.append(f"{mod} -> {dep} (a top-level module that imports stages)")
                continue
            if s != t and ranks[t] >= ranks[s]:
                bad.append(f"{mod} -> {dep}")
    return bad


def test_the_layering_checker_sees_an_upward_import() -> None:
    ranks = {"track": 0, "define": 1, "train": 2, "results": 2}
    assert layering_violations({"netrain.track.a": {"netrain.define.b"}}, ranks) == [
        "netrain.track.a -> netrain.define.b"]
    assert layering_violations({"netrain.train.a": {"netrain.results.b"}}, ranks) == [
        "netrain.train.a -> netrain.results.b"]
    assert layering_violations({"netrain.define.a": {"netrain.track.b"}}, ranks) == []


def test_every_import_goes_down_the_stages() -> None:
    ranks = stage_ranks()
    graph = import_graph(lazy=True)
    assert {stage_of(m) for m in graph} - {None} == set(ranks)
    assert layering_violations(graph, ranks) == []


def private_imports(path: Path, me: str = "") -> list[str]:
    """``from netrain.x import _name`` and ``module._name`` on an imported netrain module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = me or module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    aliases: set[str] = set()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _resolve(node, package)
            if not base.startswith("netrain"):
                continue
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    out.append(f"{me}: from {base} import {a.name}")
                elif base != "netrain" or a.name != "__version__":
                    aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name.startswith("netrain")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                and node.value.id in aliases):
            out.append(f"{me}: {node.value.id}.{node.attr}")
    return out


def test_no_module_imports_another_modules_private_names(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from netrain.define import batch\nfrom netrain.track.x import _y\n"
                     "batch._z\n")
    assert len(private_imports(probe, "netrain.results.probe")) == 2  # the checker sees both forms
    found = [f for p in _files() for f in private_imports(p)]
    assert found == []


def test_only_the_mlflow_doors_import_mlflow() -> None:
    doors = set()
    for p in _files():
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "mlflow" or n.startswith("mlflow.") for n in names):
                doors.add(module_name(p))
    assert doors, "the checker found no importer of mlflow at all"
    assert {d for d in doors if not d.startswith("netrain.track.")} <= {
        "netrain.results.mlflow_results"}
