"""Who may import whom: the contract (`rss_core`) imports neither side, the learner and the service never
import each other, the example endpoint sees only the contract, and only `rss` (the system tools) imports both.

An AST walk over every module, function-level imports included, so a stray import fails here and not
in a deployment that ships one side without the other. The same walk keeps the tests apart: no module
under tests/ imports a test module or a conftest (what they share is in tests/helpers).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

OURS = {"rss_core", "learner", "reward_service", "rss", "examples", "tests"}
# What each package may import of ours; third-party imports are free except in the contract.
ALLOWED = {
    "rss_core": {"rss_core"},
    "learner": {"learner", "rss_core"},
    "reward_service": {"reward_service", "rss_core"},
    "examples": {"examples", "rss_core"},
    "rss": {"rss", "rss_core", "learner", "reward_service"},
}
# The contract's own dependencies: what both sides must install anyway.
CONTRACT_THIRD_PARTY = {"torch", "numpy", "pydantic", "PIL"}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.partition(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.partition(".")[0]))
    return found


def violations(root: Path) -> list[str]:
    """Every import under ``root`` that breaks the layout's rules, as ``path:line: message``."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imports(path):
                where = f"{path.relative_to(root)}:{line}"
                if module in OURS and module not in allowed:
                    bad.append(f"{where}: {package} imports {module}")
                elif package == "rss_core" and module not in OURS | stdlib | CONTRACT_THIRD_PARTY:
                    bad.append(f"{where}: the contract imports {module} (allowed: {sorted(CONTRACT_THIRD_PARTY)})")
    return bad


def test_the_packages_import_only_what_the_layout_allows() -> None:
    assert violations(REPO) == []


@pytest.mark.parametrize(("package", "line", "expected"), [
    ("learner", "from reward_service.store import Store", "learner imports reward_service"),
    ("reward_service", "    from learner import train  # in a function", "reward_service imports learner"),
    ("rss_core", "import fastapi", "the contract imports fastapi"),
    ("rss_core", "from rss.procs import free_port", "rss_core imports rss"),
    ("examples", "import learner.policy", "examples imports learner"),
])
def test_the_checker_finds_a_forbidden_import(tmp_path: Path, package: str, line: str, expected: str) -> None:
    for name in ALLOWED:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("from __future__ import annotations\nimport json\n")
    (tmp_path / "rss" / "cli.py").write_text("import learner\nimport reward_service\nimport rss_core\n")
    assert violations(tmp_path) == []
    body = f"def f():\n{line}\n" if line.startswith(" ") else f"{line}\n"
    (tmp_path / package / "bad.py").write_text(body)
    found = [v.partition(": ")[2] for v in violations(tmp_path)]
    assert len(found) == 1 and found[0].startswith(expected), found


def imported_test_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path`` that names a test module (`tests.*.test_*`) or a
    conftest: shared helpers belong in tests/helpers, and fixtures reach a test through pytest, not an import."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "tests" and any(p == "conftest" or p.startswith("test_") for p in parts[1:]):
                found.append((node.lineno, name))
                break
    return found


def test_no_test_module_imports_another_or_a_conftest() -> None:
    bad = [f"{path.relative_to(REPO)}:{line}: imports {name}"
           for path in sorted((REPO / "tests").rglob("*.py")) for line, name in imported_test_modules(path)]
    assert bad == []


@pytest.mark.parametrize("line", [
    "from tests.reward_service.test_service import episode",
    "from tests.conftest import REPO",
    "import tests.learner.test_remote",
    "    from tests.reward_service.conftest import client  # in a function",
    "from tests.reward_service import test_human",
])
def test_the_test_import_checker_finds_one(tmp_path: Path, line: str) -> None:
    path = tmp_path / "test_x.py"
    path.write_text("from tests.helpers.factories import episode\nimport tests.helpers.cli\n")
    assert imported_test_modules(path) == []
    path.write_text(f"def f():\n{line}\n" if line.startswith(" ") else f"{line}\n")
    assert len(imported_test_modules(path)) == 1
