"""Print the requirements of pyproject.toml's base dependencies plus the given extras, one a line.

`python deploy/requirements.py service` lists what the service needs; the Dockerfile installs that
list in a layer of its own (a code change does not reinstall it). Extras that name this package
(`rss[learner,service]`) are followed, so `system` gives everything.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirements(extras: list[str], pyproject: Path = PYPROJECT) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    found, seen, todo = list(project["dependencies"]), set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"no extra {extra!r} in {pyproject} (there are: {', '.join(sorted(optional))})")
        seen.add(extra)
        for requirement in optional[extra]:
            own = re.fullmatch(rf"{re.escape(project['name'])}\[([^\]]+)\]", requirement.replace(" ", ""))
            if own:
                todo += own[1].split(",")
            elif requirement not in found:
                found.append(requirement)
    return found


if __name__ == "__main__":
    names = [e for arg in sys.argv[1:] for e in arg.split(",") if e]
    print("\n".join(requirements(names)))  # noqa: T201
