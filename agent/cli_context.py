"""What every CLI verb starts from: the home's paths, its config, logging, and openers for the
store, the home lock and the pipeline. Its own module so that :mod:`agent.cli` (the parser) and
:mod:`agent.cli_engine` (engine verbs) both use it without importing each other."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import sys
from typing import TYPE_CHECKING

from agent import config as configmod
from core.paths import Paths

if TYPE_CHECKING:
    from agent.lock import HomeLock
    from agent.pipeline import Pipeline
    from agent.store import Store


def _setup_logging(paths: Paths, verbose: bool) -> None:
    paths.ensure()
    root = logging.getLogger("chargebridge")
    if root.handlers:
        return
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    fh = logging.handlers.RotatingFileHandler(paths.logs / "chargebridge.log", maxBytes=5_000_000,
                                              backupCount=5, encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"))
    root.addHandler(fh)
    eh = logging.StreamHandler(sys.stderr)
    eh.setLevel(logging.DEBUG if verbose else logging.WARNING)
    eh.setFormatter(logging.Formatter("chargebridge: %(message)s"))
    root.addHandler(eh)


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.paths = Paths.resolve(args.home)
        self.config = configmod.load(self.paths.config)
        _setup_logging(self.paths, getattr(args, "verbose", False))

    def open_store(self, *, create: bool = True) -> Store:
        from agent.store import Store

        return Store.open(self.paths, self.config.key_source, create=create)

    def lock(self, purpose: str) -> HomeLock:
        from agent.lock import HomeLock

        return HomeLock(self.paths.lock, purpose)

    def pipeline(self, store: Store, chargemaster: str | None = None) -> Pipeline:
        from agent.pipeline import Pipeline

        return Pipeline.for_config(store, self.config, chargemaster=chargemaster)
