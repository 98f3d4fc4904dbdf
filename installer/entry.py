"""The ``chargebridge`` command: picks the tray or a CLI verb. It sits above both layers.

``chargebridge`` with no verb starts the tray (``ui.app``, needs the ``ui`` extra: PySide6);
with a verb it runs the CLI (``agent.cli``). ``render-report`` (started by ``chargebridge report``
with the figures on stdin) draws the monthly PDF in the UI layer (``ui.report``). The console
script and the frozen build both start here. ``multiprocessing.freeze_support()`` matters in a
frozen build: ``chargebridge ingest`` parses large batches in ``spawn`` worker processes, which
are this executable started again with ``--multiprocessing-fork`` and must run the worker
instead of the CLI.
"""

from __future__ import annotations

import multiprocessing
import sys


def main(argv: list[str] | None = None) -> int:
    multiprocessing.freeze_support()
    from agent.cli import build_parser
    from agent.cli import main as cli_main

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["render-report"]:  # `chargebridge report` draws its PDF here: the UI layer owns Qt
        try:
            from ui.report import main as render_main
        except ImportError as exc:
            print(f"chargebridge: the report needs the tray app ({exc.name or exc}); install chargebridge[ui]",
                  file=sys.stderr)
            return 2
        return int(render_main(args[1:]) or 0)
    ns = build_parser().parse_args(args)
    if ns.verb:
        return int(cli_main(args) or 0)
    try:
        from ui.app import main as ui_main
    except ImportError as exc:
        build_parser().print_help()
        print(f"\nchargebridge: the tray app is not installed ({exc.name or exc}); "
              "install chargebridge[ui] or give a verb", file=sys.stderr)
        return 2
    return int(ui_main(ns) or 0)


if __name__ == "__main__":
    sys.exit(main())
