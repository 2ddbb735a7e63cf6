"""`python -m reward_service serve|worker`: the service's own entry, as `rss serve` and `rss worker` run it."""

from __future__ import annotations

import sys

from reward_service.cli import main, worker_main

if __name__ == "__main__":
    commands = {"serve": main, "worker": worker_main}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit("usage: python -m reward_service serve|worker [options]")
    sys.exit(commands[sys.argv[1]](sys.argv[2:]))
