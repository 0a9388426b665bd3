"""The house rules, checked on the source (docs/architecture.md): each fails the day a second
way to do one thing appears."""

import ast
import functools
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mnistlab"


def load_tool():
    spec = importlib.util.spec_from_file_location("structure", ROOT / "tools" / "structure.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["structure"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@functools.cache  # parsed once for every rule
def sources() -> dict[str, ast.Module]:
    """Every module of the package, parsed, by its path relative to the package."""
    return {
        path.relative_to(PACKAGE).as_posix(): ast.parse(path.read_text(), filename=str(path))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def imported_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_cli_parses_arguments() -> None:
    offenders = [
        path
        for path, tree in sources().items()
        if not path.startswith("cli/") and "argparse" in imported_names(tree)
    ]
    assert offenders == []


def test_no_shims_between_the_cli_and_the_library() -> None:
    defined = [
        f"{path}:{node.name}"
        for path, tree in sources().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name.endswith("_from_cli")
    ]
    assert defined == []


def test_no_module_is_named_like_a_public_function() -> None:
    import mnistlab

    top = {path.stem for path in PACKAGE.glob("*.py")} | {
        path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()
    }
    assert top & set(mnistlab.__all__) == set()


BUILDER = ("build", "build_model", "build_net", "build_network", "create_model", "make_model")


def test_one_model_builder() -> None:
    """models.build is the one public function that builds a network from a spec."""
    builders = [
        f"{path}:{node.name}"
        for path, tree in sources().items()
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name in BUILDER
    ]
    assert builders == ["models/__init__.py:build"]


def test_one_normalisation_lookup() -> None:
    """mean/std are read from a model's record in one function, with one fallback: the
    dataset registry's numbers, written nowhere else."""
    lookups, constants = [], []
    for path, tree in sources().items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in ("mean", "std")
            ):
                lookups.append(path)
            if isinstance(node, ast.Constant) and node.value in (0.1307, 0.3081):
                constants.append(path)
    assert set(lookups) <= {"data/specs.py"}, lookups
    assert set(constants) <= {"data/specs.py"}, constants


def test_one_device_default() -> None:
    """Only device.pick_device chooses CUDA-when-present; public functions default to None."""
    choosers = [
        path
        for path, tree in sources().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.IfExp)
        and "cuda.is_available" in ast.unparse(node.test)
        and isinstance(node.body, ast.Constant)
        and node.body.value == "cuda"
    ]
    assert choosers == ["device.py"]
    api = sources()["api.py"]
    for node in api.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            arguments = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults))
            defaults += node.args.defaults + node.args.kw_defaults
            for argument, default in zip(arguments, defaults, strict=True):
                if argument.arg == "device":
                    assert isinstance(default, ast.Constant) and default.value is None, node.name


def test_no_import_cycles() -> None:
    every, at_import = load_tool().import_graphs(PACKAGE)
    tool = load_tool()
    assert tool.depth(every).cycles == [] and tool.depth(at_import).cycles == []


@pytest.mark.parametrize("module", ["mnistlab", "mnistlab.cli", "mnistlab.inference.preprocess"])
def test_light_modules_import_no_torch(module) -> None:
    """`import mnistlab`, `mnistlab --help` and inference's preprocessing stay free of torch."""
    import subprocess

    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
