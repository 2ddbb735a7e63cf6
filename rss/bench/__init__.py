"""`rss bench ...`: benchmark scripts, one module each."""

from __future__ import annotations

BENCHES = ("convergence", "service", "ui", "loop", "load", "feedback", "data")


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: rss bench {{{','.join(BENCHES)}}} [options]\n\n"  # noqa: T201
              "Run `rss bench <name> --help` for the options of each (`rss --help` says what each measures).")
        return 0
    if not argv or argv[0] not in BENCHES:
        raise ValueError(f"rss bench needs one of: {', '.join(BENCHES)}")
    if argv[0] == "loop":
        from rss.bench.loop import main as loop_main

        return loop_main(argv[1:])
    if argv[0] == "load":
        from rss.bench.load import main as load_main

        return load_main(argv[1:])
    if argv[0] == "ui":
        from rss.bench.ui import main as ui_main

        return ui_main(argv[1:])
    if argv[0] == "feedback":
        from rss.bench.feedback import main as feedback_main

        return feedback_main(argv[1:])
    if argv[0] == "data":
        from rss.bench.data import main as data_main

        return data_main(argv[1:])
    if argv[0] == "service":
        from rss.bench.service import main as service_main

        return service_main(argv[1:])
    from rss.bench.convergence import main as convergence_main

    return convergence_main(argv[1:])
