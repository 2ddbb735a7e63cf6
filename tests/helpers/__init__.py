"""What several test modules share, in one place: no test module imports another, nor a conftest.

`factories` (labels, masks, episode bodies, a VOC folder), `client` (HTTP calls to a running service and
reading its results), `service` (tokens, the RSS_* environment, starting `rss serve` and uvicorn apps through
`rss.procs`), `audit` (what a learner applied, what the workers scored), `cli` (running `rss`), `ui` (the
annotator tests' service and page steps). Fixtures stay in the conftest.py files, which import from here.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
