"""The docs stay true: README.md is a short front door that starts with the two commands, every
relative link in README.md and docs/*.md resolves, every `rss` command shown in a code block
exists (`--help` exits 0), and the generated settings pages match `Settings`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rss.bench
import rss.scorer
from reward_service.core import settings_doc
from reward_service.core.config import Settings

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted([README, *(REPO / "docs").glob("*.md")])
# The module behind the `rss` entry point (pyproject's [project.scripts]); the one place to change it.
CLI_MODULE = "rss.cli"
COMMANDS = {"demo", "train", "eval", "serve", "worker", "rater-sim", "bench", "scorer"}
BENCHES = set(rss.bench.BENCHES)
SUBCOMMANDS = {"bench": BENCHES, "scorer": set(rss.scorer.COMMANDS)}  # `rss bench <name>`, `rss scorer <name>`
MAX_README_LINES = 200

FENCE = re.compile(r"^ *```.*?^ *```[ \t]*$", re.S | re.M)
RSS_COMMAND = re.compile(r"(?<![\w/.:-])rss ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#* *$", re.M)


def name(path: Path) -> str:
    return str(path.relative_to(REPO))


def code_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def shown_commands() -> dict[tuple[str, ...], str]:
    """Each `rss <command> [<bench>]` in a code block of README.md or docs/*.md -> the first file showing it."""
    found: dict[tuple[str, ...], str] = {}
    for path in DOCS:
        for block in code_blocks(path.read_text()):
            for command, sub in RSS_COMMAND.findall(block):
                key = (command, sub) if command in SUBCOMMANDS else (command,)
                found.setdefault(key, name(path))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but `-` and `_`), spaces to `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors on its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_readme_is_a_front_door_that_begins_with_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    assert lines[0].startswith("# ") and lines[1] == ""
    assert lines[2].startswith("```") and lines[5] == "```", lines[2:6]
    # CI reads the test command from here: it must stay `make test`.
    assert [line.split("#")[0].strip() for line in lines[3:5]] == ["make demo", "make test"], lines[3:5]


def test_readme_links_every_docs_page() -> None:
    linked = {target.split("#")[0] for target in LINK.findall(prose(README.read_text()))}
    pages = {name(path) for path in DOCS if path != README}
    assert pages - linked == set(), "docs pages the README does not link to"


def test_docs_show_rss_commands() -> None:
    commands = shown_commands()
    assert ("train",) in commands and ("bench", "convergence") in commands, commands


@pytest.mark.parametrize("command", sorted(shown_commands()), ids=" ".join)
def test_every_shown_rss_command_exists(command: tuple[str, ...]) -> None:
    where = shown_commands()[command]
    assert command[0] in COMMANDS, f"{where} shows `rss {command[0]}`, which is not an rss command"
    assert command[0] not in SUBCOMMANDS or command[1] in SUBCOMMANDS[command[0]], \
        f"{where} shows `rss {' '.join(command)}`, which is not an rss command"
    result = subprocess.run([sys.executable, "-m", CLI_MODULE, *command, "--help"], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"`rss {' '.join(command)} --help` (shown in {where}): {result.stderr[-2000:]}"


@pytest.mark.parametrize("path", DOCS, ids=name)
def test_every_relative_link_resolves(path: Path) -> None:
    broken = []
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target}: no {resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {name(resolved)}")
    assert broken == []


CITED = re.compile(r"`((?:rss_core|learner|reward_service|rss|tests|examples|annotator_ui|deploy)/[\w./-]+?)"
                   r"(?:::\w+)?`")


@pytest.mark.parametrize("path", DOCS, ids=name)
def test_every_cited_repository_path_exists(path: Path) -> None:
    """A page that cites `learner/remote.py` or `tests/...::test_name` cites a file that is there (files move)."""
    missing = [cited for cited in CITED.findall(path.read_text()) if not (REPO / cited).exists()]
    assert missing == []


@pytest.mark.parametrize("path", DOCS, ids=name)
def test_docs_stand_on_their_own(path: Path) -> None:
    """Nothing a reader of the repository does not have: design notes, issues, trackers."""
    text = path.read_text()
    found = re.findall(r"DESIGN\.md|\bthe issue\b|\bissues? #?\d+|\btracker\b", text, re.I)
    assert found == []


def test_every_setting_has_a_description() -> None:
    assert [field for field, info in Settings.model_fields.items() if not info.description] == []


def test_generated_settings_docs_match_the_settings() -> None:
    for path, text in settings_doc.outputs().items():
        assert path.read_text() == text, f"{name(path)} is out of date: run `{settings_doc.COMMAND}`"
    result = subprocess.run([sys.executable, "-m", "reward_service.core.settings_doc", "--check"], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_settings_check_fails_on_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "settings.md"
    stale.write_text(settings_doc.render_markdown().replace("RSS_LEASE_S", "RSS_LEASE"))
    monkeypatch.setattr(settings_doc, "MARKDOWN", stale)
    assert settings_doc.main(["--check"]) == 1
    assert settings_doc.main([]) == 0 and stale.read_text() == settings_doc.render_markdown()
    assert settings_doc.main(["--check"]) == 0


def test_env_example_sets_what_parses_back_to_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commented-out line shows the default: uncommented, the whole file parses to the defaults (but the
    values the example sets for docker compose, and the examples shown for settings unset by default)."""
    for variable in [v for v in os.environ if v.startswith("RSS_")]:
        monkeypatch.delenv(variable)
    text = settings_doc.render_env()
    uncommented = tmp_path / "env"
    uncommented.write_text(re.sub(r"^# (RSS_[A-Z0-9_]+=)", r"\1", text, flags=re.M))
    parsed = Settings(_env_file=uncommented)
    examples = {"redis_url", "learner_tokens", "rater_tokens", *settings_doc.UNSET_EXAMPLES}
    for field in set(Settings.model_fields) - examples:
        assert getattr(parsed, field) == settings_doc.default(field), field
