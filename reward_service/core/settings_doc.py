"""Render the settings' documentation from the `Settings` model, so that it is written once.

    python -m reward_service.core.settings_doc           # write docs/settings.md and .env.example
    python -m reward_service.core.settings_doc --check   # exit 1 when either differs from what it would write

Both files come from `Settings.model_fields` (name -> `RSS_<NAME>`, type, default, `description`), grouped by
the comment that opens each block of fields in `config.py`. Edit a description there, then run this.
The variables docker compose reads itself (no `RSS_` prefix) are not settings of the service; they are
listed in `COMPOSE_VARIABLES` below and rendered into both files too.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import tyro
from pydantic.fields import FieldInfo

from reward_service.core import config
from reward_service.core.config import Settings

REPO = Path(__file__).resolve().parents[2]
MARKDOWN = REPO / "docs" / "settings.md"
ENV_EXAMPLE = REPO / ".env.example"
COMMAND = "python -m reward_service.core.settings_doc"
WIDTH = 100


class Variable(NamedTuple):
    name: str
    value: str  # the value the example file shows
    set_in_example: bool  # uncommented in .env.example
    description: str


# Values .env.example sets (uncommented) for docker compose: compose refuses to start without the tokens and
# the Redis URL, and its bundled Redis is not the default's. They are examples, not defaults: tokens are
# secrets and have none.
EXAMPLE_VALUES = {
    "redis_url": ("redis://:change-me-redis-password@redis:6379/0",
                  "Set here to compose's bundled `redis` service, which requires the password written in it (replace "
                  "it; for `rss serve` on this machine, write 127.0.0.1 instead of redis)."),
    "learner_tokens": ('["change-me-learner-token"]', "Replace the example token."),
    "rater_tokens": ('{"alice": "change-me-rater-token"}', "Replace the example token."),
}
# What the commented-out line of a setting that is unset by default shows (uncommented, an empty value would
# not parse as a number or a folder).
UNSET_EXAMPLES = {"data_root": "/data/VOC2012", "num_classes": "21", "shapes_length": "2000",
                  "ui_dir": "/srv/annotator_ui"}

COMPOSE_VARIABLES = [
    Variable("ENV_FILE", ".env", False, "The env file every service container reads (.env.example copied to .env)."),
    Variable("LEARNER_TOKEN", "change-me-learner-token", True,
             "REQUIRED: the bearer token the compose learner sends; one of RSS_LEARNER_TOKENS."),
    Variable("SERVICE_BIND", "127.0.0.1", True,
             "Host address of the proxy in front of the reward_service replicas (API, /docs, /ui). 127.0.0.1 keeps "
             "it on this machine; 0.0.0.0 opens it to the network (put TLS in front)."),
    Variable("SERVICE_PORT", "8000", True, "Host port of that proxy."),
    Variable("DATA_DIR", "/srv/datasets/VOC2012", False,
             "Host folder of the dataset, mounted read-only at /data in the service, workers and learner (for "
             "voc/cityscapes/context). Unset: an empty volume, enough for the built-in shapes."),
    Variable("RUNS_DIR", "./runs", False,
             "Where checkpoints and reports go: the named volume `runs` by default, or a host folder writable by "
             "uid 10001 (the containers' user)."),
    Variable("RUN_NAME", "compose", True,
             "The learner's report folder under /runs, and its run id at the service (--resume keeps both)."),
    Variable("TORCHRUN_FLAGS", "--standalone --nproc-per-node 1", True,
             "How torchrun starts the learner: ranks per node (one per GPU), and for several nodes the rendezvous "
             "(docs/deployment.md)."),
    Variable("TRAIN_FLAGS", "--steps 3000", True,
             "More `rss train` flags, e.g. --steps 6000 --reward pixel --threads 2 (rss train --help)."),
    Variable("IMAGE", "rss:cpu", True, "Tag of the built image."),
    Variable("PYTHON_IMAGE", "python:3.11-slim-bookworm", True,
             "Base image of the built one (both stages); deploy/local-images.sh builds a local stand-in."),
    Variable("WHEELHOUSE_ONLY", "1", False,
             "Set (1): the image installs every Python package from deploy/wheelhouse/ (deploy/wheelhouse.sh fills "
             "it), asking no index. Unset: the public indexes."),
    Variable("TORCH_INDEX_URL", "https://download.pytorch.org/whl/cpu", True,
             "The torch wheel index the image installs from (CPU by default)."),
    Variable("GPU_IMAGE", "rss:gpu", True, "The GPU learner's image (docker-compose.gpu.yml)."),
    Variable("TORCH_GPU_INDEX_URL", "https://download.pytorch.org/whl/cu128", True,
             "The torch wheel index of the GPU learner's image."),
    Variable("GPU_COUNT", "all", True, "GPUs the GPU learner reserves: all, or a number."),
    Variable("REDIS_IMAGE", "redis:7.2-alpine", True, "The Redis image (>= 6.2 for XAUTOCLAIM)."),
    Variable("PROXY_IMAGE", "nginxinc/nginx-unprivileged:1.27-alpine", True, "The unprivileged nginx proxy's image."),
]


class Group(NamedTuple):
    title: str
    fields: list[str]


def groups() -> list[Group]:
    """The fields in `config.py`'s order, in the groups its comments open: a comment after a blank line starts one."""
    source = inspect.getsource(config)
    lines = source.splitlines()
    cls = next(node for node in ast.parse(source).body if isinstance(node, ast.ClassDef) and node.name == "Settings")
    found: list[Group] = []
    for stmt in cls.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and stmt.target.id in Settings.model_fields):
            continue
        above = stmt.lineno - 2  # 0-based index of the line above the statement
        first_comment = None
        while above >= 0 and lines[above].strip().startswith("#"):
            first_comment, above = lines[above].strip(), above - 1
        if first_comment is not None and (above < 0 or not lines[above].strip()) or not found:
            title = (first_comment or "# settings").lstrip("#").strip()
            found.append(Group(title[:1].upper() + title[1:], []))
        found[-1].fields.append(stmt.target.id)
    missing = set(Settings.model_fields) - {name for group in found for name in group.fields}
    assert not missing, f"fields not found in config.py's class body: {sorted(missing)}"
    return found


def type_name(field: FieldInfo) -> str:
    ann = field.annotation
    name = ann.__name__ if isinstance(ann, type) else str(ann)
    return name.replace("pathlib.", "").replace("typing.", "")


def bounds(field: FieldInfo) -> str:
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = [f"{sign} {getattr(m, attr)}" for m in field.metadata for attr, sign in signs.items() if hasattr(m, attr)]
    return ", ".join(parts)


def env_value(value: Any) -> str:
    """A default as a `.env` line writes it (what pydantic-settings parses back to the same value)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def variable(name: str) -> str:
    return f"RSS_{name.upper()}"


def default(name: str) -> Any:
    return Settings.model_fields[name].get_default(call_default_factory=True)


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    fields = Settings.model_fields
    out = [
        "# Settings",
        "",
        f"<!-- Generated by `{COMMAND}` from the `Settings` model in",
        "     reward_service/core/config.py: edit the field descriptions there and run it again;",
        "     tests/test_docs.py fails when this file drifts. -->",
        "",
        *textwrap.wrap(
            "The reward service (`rss serve`, `rss worker`) reads every setting from an `RSS_*` environment "
            "variable or a line in `.env` in the working directory; environment variables win. "
            "[`.env.example`](../.env.example) is generated from the same fields: copy it to `.env` and uncomment "
            "what you change. `rss serve --host/--port` override `RSS_HOST` and `RSS_PORT`. Lists and objects are "
            "written as JSON. Under docker compose, four are fixed by the compose file; see "
            "[deployment](deployment.md).", WIDTH, break_on_hyphens=False, break_long_words=False),
        "",
    ]
    for group in groups():
        out += [f"## {group.title}", "", "| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name in group.fields:
            field = fields[name]
            kind = type_name(field) + (f" ({bounds(field)})" if bounds(field) else "")
            value = default(name)
            shown = "unset" if value is None else f"`{cell(env_value(value))}`"
            if name in ("learner_tokens", "rater_tokens"):
                shown = "none" if not value else shown
            out.append(f"| `{variable(name)}` | `{cell(kind)}` | {shown} | {cell(field.description or '')} |")
        out.append("")
    out += [
        "## Docker compose only",
        "",
        "Read by `docker-compose.yml` and `docker-compose.gpu.yml` themselves, not by the service. The value is",
        "the one `.env.example` shows.",
        "",
        "| variable | example | meaning |",
        "| --- | --- | --- |",
    ]
    for var in COMPOSE_VARIABLES:
        out.append(f"| `{var.name}` | `{cell(var.value)}` | {cell(var.description)} |")
    return "\n".join(out) + "\n"


def comment(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH - 2, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)


def heading(title: str) -> str:
    start = f"# --- {title} "
    return start + "-" * max(3, WIDTH - len(start))


def render_env() -> str:
    fields = Settings.model_fields
    out = comment(
        f"Reward service settings (`rss serve`, `rss worker`, docker compose), generated by `{COMMAND}` from "
        "reward_service/core/config.py: change the descriptions there, not here. docs/settings.md is the same "
        "list as a table.")
    out += ["#"] + comment(
        "Copy this file to .env and edit it. A commented-out line shows the setting's default; uncomment it to "
        "change it. The lines that are set are what docker compose needs: the tokens (REQUIRED: replace them) "
        "and compose's bundled Redis. The last section (no RSS_ prefix) is read by docker compose only "
        "(docs/deployment.md).")
    for group in groups():
        out += ["", heading(group.title[:1].lower() + group.title[1:])]
        for name in group.fields:
            value = default(name)
            text = f"{fields[name].description} Default: {env_value(value)}."
            if name in EXAMPLE_VALUES:
                example, note = EXAMPLE_VALUES[name]
                out += comment(f"{text} {note}") + [f"{variable(name)}={example}"]
            elif value is None:
                out += comment(f"{fields[name].description} Default: unset (the line shows an example).")
                out.append(f"# {variable(name)}={UNSET_EXAMPLES[name]}")
            else:
                out += comment(text) + [f"# {variable(name)}={env_value(value)}"]
    out += ["", heading("docker compose only (docker-compose.yml, docker-compose.gpu.yml)")]
    for var in COMPOSE_VARIABLES:
        out += comment(var.description) + [f"{'' if var.set_in_example else '# '}{var.name}={var.value}"]
    return "\n".join(out) + "\n"


def outputs() -> dict[Path, str]:
    return {MARKDOWN: render_markdown(), ENV_EXAMPLE: render_env()}


def relative(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


@dataclass
class SettingsDocArgs:
    """Write docs/settings.md and .env.example from the `Settings` model."""

    check: Annotated[bool, tyro.conf.FlagCreatePairsOff] = False
    """write nothing; exit 1 when a file differs"""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(SettingsDocArgs, args=argv, prog=COMMAND, description=__doc__.splitlines()[0])
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.write_text(text)
            sys.stderr.write(f"wrote {relative(path)}\n")
    if stale:
        names = ", ".join(relative(p) for p in stale)
        sys.stderr.write(f"{names} out of date with reward_service/core/config.py: run `{COMMAND}`\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
