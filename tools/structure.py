"""Measure the package's structure, to compare before and after moving modules around.

    .venv/bin/python tools/structure.py [--src src/mnistlab] [--trip "train ..."] [--stop NAME]
                                         [--json]

It prints three things about the package (static ones read with `ast`, nothing imported):

1. Import-graph depth. Nodes: the package's modules (a package's __init__ is the package's
   name). Edges: each distinct (importer, imported) pair of package modules, `from p import x`
   going to p.x when that is a module and to p otherwise; self-imports ignored. "all imports":
   every import statement in the file, in functions and `if TYPE_CHECKING:` blocks too;
   "module level": only those that run when the module is imported (outside functions and
   outside `if TYPE_CHECKING:`). Depth: the number of modules on the longest import chain;
   when the graph has cycles, on the graph with each cycle (strongly connected component)
   collapsed into one node.
2. Modules per folder: .py files and their total lines, for the root and each subpackage.
3. Argument trip: one CLI command run in-process (mnistlab.cli.main(argv) from --src) under
   sys.settrace, recording in which package modules Python functions are called from the
   command's handler (the first call handed the parsed argparse.Namespace) up to and
   including the first call of a --stop function (default train_epoch): the path the parsed
   arguments take to the start of the work. Calls made while a module of the package is
   being imported (decorators, constants) are not part of it. Consecutive calls in one
   module make one visit; "returns" are visits to a module visited before. Paths in the
   command are relative to the repository root; <tmpdir> is a fresh temporary folder,
   removed afterwards.
"""

import argparse
import ast
import contextlib
import importlib
import inspect
import io
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TRIP = (
    "train experiments/19-thin-stem.toml --epochs 1 --limit-train 256 --limit-test 256"
    " --quiet --device cpu --threads 1 --out <tmpdir>/run"
)
DEFAULT_STOP = "train_epoch"


# --- 1. import graph -------------------------------------------------------------------------


def module_files(src: Path) -> dict[str, Path]:
    """Every module of the package at `src`, by dotted name."""
    modules = {}
    for path in sorted(src.rglob("*.py")):
        relative = path.relative_to(src)
        if any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
            continue
        parts = [src.name, *relative.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def is_type_checking(test: ast.expr) -> bool:
    """Whether an `if` tests TYPE_CHECKING (bare or as typing.TYPE_CHECKING)."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def import_nodes(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Each import statement, with whether it runs when the module is imported."""
    stack: list[tuple[ast.AST, bool]] = [(tree, True)]
    while stack:
        node, at_import = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, at_import
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            # Decorators and defaults run at import time, the body only when called, but
            # imports can only be statements of the body.
            stack.extend((child, False) for child in ast.iter_child_nodes(node))
        elif isinstance(node, ast.If) and is_type_checking(node.test):
            stack.extend((child, False) for child in node.body)
            stack.extend((child, at_import) for child in node.orelse)
        else:
            stack.extend((child, at_import) for child in ast.iter_child_nodes(node))


def known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of the modules."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imported_modules(
    node: ast.Import | ast.ImportFrom, module: str, modules: dict[str, Path]
) -> set[str]:
    """The package modules one import statement in `module` imports."""
    targets: set[str | None] = set()
    if isinstance(node, ast.Import):
        targets = {known_prefix(alias.name, modules) for alias in node.names}
    else:
        base = node.module or ""
        if node.level:
            is_package = modules[module].name == "__init__.py"
            package = module.split(".") if is_package else module.split(".")[:-1]
            anchor = package[: len(package) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in modules else known_prefix(base, modules))
    return {target for target in targets if target and target != module}


@dataclass
class Graph:
    modules: list[str]
    edges: dict[str, set[str]]

    @property
    def edge_count(self) -> int:
        return sum(len(targets) for targets in self.edges.values())


def import_graphs(src: Path) -> tuple[Graph, Graph]:
    """The graphs of all imports and of module-level imports."""
    modules = module_files(src)
    every: dict[str, set[str]] = {name: set() for name in modules}
    at_import: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, runs_at_import in import_nodes(tree):
            targets = imported_modules(node, name, modules)
            every[name] |= targets
            if runs_at_import:
                at_import[name] |= targets
    names = sorted(modules)
    return Graph(names, every), Graph(names, at_import)


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in graph.modules:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.edges[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


@dataclass
class Depth:
    modules: int
    edges: int
    depth: int
    chain: list[list[str]]  # one list of modules per node: more than one for a cycle
    cycles: list[list[str]] = field(default_factory=list)


def depth(graph: Graph) -> Depth:
    """The longest import chain, on the condensation when there are cycles."""
    components = strongly_connected(graph)
    component_of = {name: i for i, members in enumerate(components) for name in members}
    successors = [
        {component_of[t] for name in members for t in graph.edges[name]} - {i}
        for i, members in enumerate(components)
    ]
    # Tarjan emits a component after every component it reaches, so one pass in that order
    # sees each successor's depth before it is needed.
    longest: list[int] = []
    following: list[int | None] = []
    for i in range(len(components)):
        best = min(successors[i], key=lambda j: (-longest[j], components[j]), default=None)
        longest.append(1 + (longest[best] if best is not None else 0))
        following.append(best)
    start = min(range(len(components)), key=lambda i: (-longest[i], components[i]), default=None)
    chain = []
    while start is not None:
        chain.append(components[start])
        start = following[start]
    cycles = sorted(members for members in components if len(members) > 1)
    return Depth(len(graph.modules), graph.edge_count, len(chain), chain, cycles)


# --- 2. modules per folder ---------------------------------------------------------------------


def folders(src: Path) -> list[dict[str, Any]]:
    """Modules and lines per folder of the package, the root first."""
    counts: dict[str, list[int]] = {}
    for path in module_files(src).values():
        folder = Path(src.name, path.parent.relative_to(src)).as_posix() + "/"
        count = counts.setdefault(folder, [0, 0])
        count[0] += 1
        count[1] += len(path.read_text(encoding="utf-8").splitlines())
    return [
        {"folder": folder, "modules": count[0], "lines": count[1]}
        for folder, count in sorted(counts.items())
    ]


# --- 3. argument trip --------------------------------------------------------------------------


@contextlib.contextmanager
def silenced(stderr: io.StringIO) -> Iterator[None]:
    """Swallow output, at the file descriptors too (for C code and child processes); Python's
    sys.stderr goes to `stderr`, to quote the error line of a failed command."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
                yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def importing(frame: FrameType | None, package: str) -> bool:
    """True while one of the package's modules is being imported (its body runs below)."""
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if frame.f_code.co_name == "<module>" and name.split(".")[0] == package:
            return True
        frame = frame.f_back
    return False


def trip(src: Path, command: str, stop: set[str]) -> dict[str, Any]:
    """Run one CLI command in-process and record the package modules it calls functions in."""
    package = src.name
    sys.path.insert(0, str(src.parent))  # the checkout's source, not an installed copy
    cli = importlib.import_module(f"{package}.cli")
    if not Path(cli.__file__ or "").resolve().is_relative_to(src):
        raise SystemExit(f"imported {cli.__name__} from {cli.__file__}, not from {src}")
    visits: list[str] = []
    stopped_at: list[str] = []
    parsed: list[bool] = []

    def tracer(frame: FrameType, event: str, arg: Any) -> None:
        # Called for 'call' events only (a None return asks for no line or return events).
        name = frame.f_globals.get("__name__", "")
        if not (name == package or name.startswith(package + ".")):
            return None
        if not frame.f_code.co_flags & inspect.CO_OPTIMIZED:  # a module or class body running
            return None
        if importing(frame, package):  # a decorator or constant computed while importing
            return None
        # The trip starts where the parsed arguments do: the first call handed the Namespace
        # (the command's handler); building the parser and parsing are not part of it.
        if not parsed:
            if not any(isinstance(v, argparse.Namespace) for v in frame.f_locals.values()):
                return None
            parsed.append(True)
        if not visits or visits[-1] != name:
            visits.append(name)
        if frame.f_code.co_name in stop:
            stopped_at.append(f"{name}.{frame.f_code.co_name}")
            sys.settrace(None)  # the rest of the run goes untraced, at full speed
        return None

    outdir = tempfile.mkdtemp(prefix="structure-")
    argv = shlex.split(command.replace("<tmpdir>", outdir))
    cwd = os.getcwd()
    error = None
    stderr = io.StringIO()
    try:
        os.chdir(REPO)
        with silenced(stderr):
            sys.settrace(tracer)
            try:
                exit_code = cli.main(argv)
            except SystemExit as e:  # argparse's --help and the like
                exit_code = e.code if isinstance(e.code, int) else 1
            except Exception as e:  # report it beside what was recorded
                exit_code = None
                error = f"{type(e).__name__}: {e}"
            finally:
                sys.settrace(None)
    finally:
        os.chdir(cwd)
        shutil.rmtree(outdir, ignore_errors=True)
    if exit_code != 0 and error is None:
        error = next((line for line in reversed(stderr.getvalue().splitlines()) if line), None)
    return {
        "command": command,
        "exit_code": exit_code,
        "error": error,
        "stop": sorted(stop),
        "stopped_at": stopped_at[0] if stopped_at else None,
        "modules": len(set(visits)),
        "visits": len(visits),
        "returns": len(visits) - len(set(visits)),
        "sequence": visits,
    }


# --- output -------------------------------------------------------------------------------------


def short(name: str, package: str) -> str:
    return name.removeprefix(package + ".")


def graph_data(result: Depth, package: str) -> dict[str, Any]:
    return {
        "modules": result.modules,
        "edges": result.edges,
        "depth": result.depth,
        "condensed": bool(result.cycles),
        "chain": [[short(name, package) for name in members] for members in result.chain],
        "cycles": [[short(name, package) for name in members] for members in result.cycles],
    }


def text_report(data: dict[str, Any]) -> str:
    package = data["package_name"]
    lines = [f"package: {data['package']}"]
    for key, label in (("all", "all imports"), ("module_level", "module level")):
        graph = data["import_graph"][key]
        chain = " > ".join(
            m[0] if len(m) == 1 else "{" + ", ".join(m) + "}" for m in graph["chain"]
        )
        condensed = " (cycles collapsed)" if graph["condensed"] else ""
        lines.append(
            f"import graph ({label}): {graph['modules']} modules, {graph['edges']} edges,"
            f" depth {graph['depth']}{condensed}: {chain}"
        )
    for key, label in (("all", "all imports"), ("module_level", "module level")):
        cycles = data["import_graph"][key]["cycles"]
        found = "; ".join("{" + ", ".join(members) + "}" for members in cycles)
        lines.append(f"cycles ({label}): {found or 'none'}")
    lines.append("modules per folder:")
    width = max(len(row["folder"]) for row in data["folders"])
    for row in data["folders"]:
        lines.append(
            f"  {row['folder']:<{width}} {row['modules']:3d} modules {row['lines']:6d} lines"
        )
    if "trip" in data:
        result = data["trip"]
        verb = result["command"].split()[0] if result["command"].split() else ""
        lines.append(
            f"argument trip of `{package} {verb} ...`: {result['modules']} modules,"
            f" {result['visits']} visits, {result['returns']} returns"
        )
        lines.append("  " + " > ".join(result["sequence"]))
        if result["stopped_at"]:
            lines.append(f"  stopped at the first call of {result['stopped_at']}")
        else:
            stop = ", ".join(result["stop"])
            lines.append(f"  never called {stop}: the whole run is recorded")
        lines.append(f"  command: {package} {result['command']}")
        lines.append(f"  exit code {result['exit_code']}")
        if result["error"]:
            lines.append(f"  error: {result['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO / "src" / "mnistlab", help="the package")
    parser.add_argument("--trip", default=DEFAULT_TRIP, help="the CLI command to trace")
    parser.add_argument("--no-trip", action="store_true", help="skip the traced command")
    parser.add_argument(
        "--stop", action="append", metavar="NAME", help=f"stop function (default {DEFAULT_STOP})"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--label", default=None, help="how to name the package in the output (default: its path)"
    )
    args = parser.parse_args(argv)

    src = args.src.resolve()
    if not (src / "__init__.py").is_file():
        parser.error(f"{src} is not a package (no __init__.py)")
    package = src.name
    every, at_import = import_graphs(src)
    data: dict[str, Any] = {
        "package": args.label or str(src.relative_to(REPO) if src.is_relative_to(REPO) else src),
        "package_name": package,
        "import_graph": {
            "all": graph_data(depth(every), package),
            "module_level": graph_data(depth(at_import), package),
        },
        "folders": folders(src),
    }
    if not args.no_trip:
        data["trip"] = trip(src, args.trip, set(args.stop or [DEFAULT_STOP]))
        data["trip"]["sequence"] = [short(name, package) for name in data["trip"]["sequence"]]
    print(json.dumps(data, indent=2) if args.json else text_report(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
