"""RCM targets (FHIR, X12): push charges, fetch the RCM's view for reconciliation.

Adding a vendor is one module and one line in :data:`TARGETS`. The module provides

- ``NAME``: the type name, equal to its key here (``[rcm] type = "..."``);
- ``make(settings: TargetSettings, secret: str) -> Target``: builds a ready target, raising
  :class:`~core.errors.ConfigError` (with the ``rcm.*`` key at fault) for settings it cannot use.

A registration mistake (a missing ``make``, a wrong ``NAME``, a factory that returns something
that is not a :class:`~connectors.rcm.base.Target`) is a clear error when the target is built,
not an ``AttributeError`` in the middle of a sync.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import cast

from connectors.rcm.base import Target, TargetSettings
from core.errors import ChargeBridgeError, ConfigError

TARGETS: dict[str, str] = {
    "fhir": "connectors.rcm.fhir",
    "x12": "connectors.rcm.x12.target",  # 837P to a clearinghouse (folder or SFTP)
}

Factory = Callable[[TargetSettings, str], Target]


def target_types() -> tuple[str, ...]:
    """The registered type names, for ``[rcm] type`` and its error messages."""
    return tuple(TARGETS)


def _broken(kind: str, module: str, problem: str) -> ChargeBridgeError:
    return ChargeBridgeError(f"the RCM connector {kind!r} ({module}) is not registered correctly: {problem}",
                             "this is a defect in ChargeBridge or a plug-in; report it to support")


def factory(kind: str, *, registry: dict[str, str] | None = None) -> Factory:
    """The checked ``make`` of the connector registered as ``kind``."""
    reg = TARGETS if registry is None else registry
    if kind not in reg:
        raise ConfigError(f"unknown RCM type {kind!r}", f"use one of: {', '.join(reg)}", key="rcm.type")
    modname = reg[kind]
    try:
        module = importlib.import_module(modname)
    except ImportError as exc:
        raise _broken(kind, modname, f"cannot be imported ({type(exc).__name__}: {exc})") from None
    name = getattr(module, "NAME", None)
    if name != kind:
        raise _broken(kind, modname, f"its NAME is {name!r}, not {kind!r}")
    make = getattr(module, "make", None)
    if not callable(make):
        raise _broken(kind, modname, "it has no make(settings, secret) function")
    try:
        inspect.signature(make).bind(TargetSettings(base_url=""), "")
    except TypeError:
        raise _broken(kind, modname, "make() does not take (settings, secret)") from None
    except ValueError:  # no signature to inspect (a builtin): trust it, the result is checked below
        pass
    return cast(Factory, make)


def make_target(kind: str, settings: TargetSettings, secret: str, *,
                registry: dict[str, str] | None = None) -> Target:
    """Build the target registered as ``kind``; the result is checked against :class:`Target`."""
    target = factory(kind, registry=registry)(settings, secret)
    if not isinstance(target, Target):
        modname = (TARGETS if registry is None else registry)[kind]
        missing = [m for m in ("name", "identifier", "push", "fetch_charges", "check") if not hasattr(target, m)]
        raise _broken(kind, modname, f"make() returned a {type(target).__name__} without {', '.join(missing)}")
    return target
