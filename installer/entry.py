"""Frozen entry point of the ``chargebridge`` executable (PyInstaller builds only).

Same command line as the ``chargebridge`` console script (``agent.cli:main``); the only
addition is ``multiprocessing.freeze_support()``: ``chargebridge ingest`` parses large batches
in ``spawn`` worker processes, and in a frozen build those workers are this executable started
again with ``--multiprocessing-fork``, which must run the worker instead of the CLI.
"""

import multiprocessing
import sys


def main() -> int:
    multiprocessing.freeze_support()
    from agent.cli import main as cli_main

    return int(cli_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
