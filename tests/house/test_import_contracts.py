"""The house rules in pyproject.toml hold for the code, and they fail on a violation.

The import contracts are checked twice: on the real tree (what `make lint` runs), and on a copy of
the same contracts applied to a small generated tree, where each test plants one violation and
expects the contract that forbids it, and only that one, to break.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "src").is_dir())
LAYERS = ("core", "usecases", "adapters", "entrypoints")


def config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def contracts() -> list[dict]:
    return config()["tool"]["importlinter"]["contracts"]


def run_lint_imports(config_file: Path, cwd: Path, pythonpath: Path | None = None) -> str:
    env = None if pythonpath is None else {**os.environ, "PYTHONPATH": str(pythonpath)}
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache", str(config_file)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.stdout + done.stderr


def broken(output: str) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^(.+?)\s*BROKEN$", output, re.M)}


def test_every_service_and_lib_is_under_the_contracts() -> None:
    lint = config()["tool"]["importlinter"]
    libs = {
        p.name
        for lib in (ROOT / "libs").iterdir()
        for p in (lib / "src").glob("*")
        if (p / "__init__.py").exists()
    }
    assert set(SERVICES) | libs == set(lint["root_packages"])
    layered = next(c for c in contracts() if c["type"] == "layers")
    assert set(layered["containers"]) == set(SERVICES)
    acyclic = next(c for c in contracts() if c["type"] == "acyclic_siblings")
    # The generated wire types (medbench) are the only root not checked for circles.
    assert set(acyclic["ancestors"]) == set(lint["root_packages"]) - {"medbench"}


def test_the_tree_keeps_every_contract() -> None:
    output = run_lint_imports(ROOT / "pyproject.toml", ROOT)
    assert "Contracts:" in output, output
    assert not broken(output), output
    assert re.search(r"Contracts: (\d+) kept, 0 broken", output), output


# A generated tree with the same root package names under a prefix, so the real contracts
# (renamed) apply to it.
PREFIX = "hx_"


def renamed(value: object, names: set[str]) -> object:
    if isinstance(value, list):
        return [renamed(v, names) for v in value]
    if isinstance(value, str):
        head, dot, tail = value.partition(".")
        return f"{PREFIX}{head}{dot}{tail}" if head in names else value
    return value


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Skeleton packages for every root: each service with its four layers and app.py."""
    lint = config()["tool"]["importlinter"]
    names = set(lint["root_packages"])
    src = tmp_path / "src"
    for name in names:
        package = src / f"{PREFIX}{name}"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        if name in SERVICES:
            for layer in LAYERS:
                (package / layer).mkdir()
                (package / layer / "__init__.py").write_text("")
            (package / "app.py").write_text("")
    lines = ["[tool.importlinter]"]
    lines.append(f"root_packages = {toml_value(renamed(lint['root_packages'], names))}")
    lines.append("include_external_packages = true")
    for contract in lint["contracts"]:
        lines.append("\n[[tool.importlinter.contracts]]")
        for key, value in contract.items():
            lines.append(f"{key} = {toml_value(renamed(value, names))}")
    (tmp_path / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return tmp_path


def plant(tree: Path, module: str, source: str) -> None:
    path = tree / "src" / (PREFIX + module.replace(".", "/") + ".py")
    path.write_text(source)


def check(tree: Path) -> set[str]:
    output = run_lint_imports(tree / "pyproject.toml", tree, tree / "src")
    assert "Contracts:" in output, output
    return broken(output)


def name_of(fragment: str) -> str:
    return next(c["name"] for c in contracts() if fragment in c["name"])


def test_the_skeleton_keeps_every_contract(tree: Path) -> None:
    plant(tree, "gateway.core.rules", "import math\n")
    plant(tree, "gateway.usecases.submit", f"from {PREFIX}gateway.core import rules\n")
    plant(tree, "gateway.adapters.mongo_store", f"from {PREFIX}gateway.core import rules\n")
    plant(
        tree,
        "gateway.entrypoints.grpc_servicer",
        f"from {PREFIX}gateway.usecases import submit\nfrom {PREFIX}gateway.core import rules\n",
    )
    plant(
        tree,
        "gateway.app",
        f"from {PREFIX}gateway.adapters import mongo_store\n"
        f"from {PREFIX}gateway.entrypoints import grpc_servicer\n",
    )
    assert check(tree) == set()


@pytest.mark.parametrize(
    ("module", "source", "contract"),
    [
        ("gateway.core.rules", "import pymongo\n", "core is pure"),
        ("rotator.core.rules", f"import {PREFIX}medbench\n", "core is pure"),
        ("aggregator.core.rules", "import grpc\n", "core is pure"),
        (
            "gateway.entrypoints.grpc_servicer",
            f"from {PREFIX}gateway.adapters import __name__ as _\n",
            "entry points translate",
        ),
        ("dispatcher.usecases.run", "import kafka\n", "use cases reach the world"),
        (
            "metric_scorer.core.rules",
            f"from {PREFIX}metric_scorer.usecases import __name__ as _\n",
            "one floor plan",
        ),
        (
            "judge_scorer.adapters.store",
            f"from {PREFIX}aggregator.core import __name__ as _\n",
            "no service imports another",
        ),
        (
            "medbench_devstack.demo",
            f"def table():\n    from {PREFIX}rotator.core import __name__ as _\n",
            "libs never import services",
        ),
    ],
)
def test_a_violation_breaks_its_contract(
    tree: Path, module: str, source: str, contract: str
) -> None:
    plant(tree, module, source)
    assert name_of(contract) in check(tree)


def test_a_circle_held_open_by_a_function_local_import_breaks(tree: Path) -> None:
    plant(tree, "metric_scorer.core.metrics", "def score():\n    from . import library\n")
    plant(tree, "metric_scorer.core.library", "from . import metrics\n")
    assert check(tree) == {name_of("no import circles")}


def test_mypy_is_strict_on_every_core_and_the_plumbing_libs() -> None:
    mypy = config()["tool"]["mypy"]
    assert mypy["strict"] is True
    assert {f"{s}.core" for s in SERVICES} <= set(mypy["packages"])
    assert {"medbench_runtime", "medbench_messaging", "medbench_storage"} <= set(mypy["packages"])
