"""The arguments the `rss bench` commands share: base dataclasses each bench's own extends.

tyro parses every bench from its dataclass (the field docstrings are the --help text), then
`validate()` refuses impossible values with a ValueError naming the flag, which `rss` reports as a
CLI error (exit code 2) before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypeVar

import tyro

T = TypeVar("T", bound="BenchArgs")


@dataclass
class BenchArgs:
    """What every bench takes."""

    json: Annotated[str | None, tyro.conf.arg(metavar="PATH")] = None
    """also write the numbers as JSON to this path"""

    def validate(self) -> None:
        """Reject impossible values up front, naming the flag."""


@dataclass
class ServedBenchArgs(BenchArgs):
    """A bench against its own redis-server and `rss serve`, serving `shapes` at --size."""

    size: int = 64
    """image and mask side in pixels (the service's RSS_SHAPES_SIZE)"""
    seed: int = 0
    """seed of the mask noise"""

    def validate(self) -> None:
        super().validate()
        if self.size < 16:
            raise ValueError("--size must be at least 16 (the shapes dataset's minimum)")


def parse(cls: type[T], argv: list[str], prog: str, description: str | None = None) -> T:
    """``argv`` parsed into ``cls`` (its docstring is the --help description unless ``description``) and validated."""
    args = tyro.cli(cls, args=argv, prog=prog, description=description)
    args.validate()
    return args
