"""``chargebridge pair``: on the practice server, a one-time pairing code for a front-desk PC;
``chargebridge pair --connect URL CODE`` on the PC, the other half (see :mod:`core.pairing`)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError
from core.states import Role

if TYPE_CHECKING:
    from agent.cli_context import Context


def register(sub: Any) -> None:
    s = sub.add_parser("pair", help="pair a front-desk PC: a one-time code here, or --connect URL CODE on the PC")
    s.add_argument("--role", choices=[r.value for r in Role], default=Role.FRONT_DESK.value,
                   help="the paired PC's role (default front_desk)")
    s.add_argument("--name", default="", help="the paired PC's user name (default pc-xxxx)")
    s.add_argument("--connect", metavar="URL", help="on the PC: the engine address `chargebridge pair` printed")
    s.add_argument("code", nargs="?", help="with --connect: the pairing code")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_pair)


def cmd_pair(ctx: Context, args: argparse.Namespace) -> int:
    if args.connect:
        return _connect(ctx, args)
    if args.code:
        raise ConfigError("a code is only given with --connect", "on the PC: chargebridge pair --connect URL CODE")
    return _new_code(ctx, args)


def _lan(ctx: Context) -> tuple[str, str]:
    """(engine LAN URL, CA fingerprint): from the running engine, else from the config."""
    from agent import tls

    try:
        info = json.loads(ctx.paths.engine_info.read_text())
    except (OSError, ValueError):
        info = {}
    if info.get("lan_url") and info.get("ca_fingerprint"):
        return str(info["lan_url"]), str(info["ca_fingerprint"])
    api = ctx.config.api
    if not tls.tls_enabled(api):
        raise ConfigError("this engine is not in LAN mode, so no PC can reach it",
                          'set [api] host (this server\'s LAN address, or "0.0.0.0" with tls_names) and '
                          'tls = "auto" in chargebridge.toml, restart the engine, then run chargebridge pair again',
                          key="api.tls")
    material = tls.ensure(ctx.paths, api)
    host = (api.tls_names[0] if api.host in tls.WILDCARD_HOSTS else api.host).strip("[]")
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}:{api.port}", material.ca_fingerprint


def _new_code(ctx: Context, args: argparse.Namespace) -> int:
    from agent import pairing
    from agent.cli_engine import _cli_actor
    from core.pairing import pairing_code

    url, fp = _lan(ctx)
    store = ctx.open_store(create=False)
    try:
        new = pairing.create_code(store, args.role, args.name, actor=_cli_actor())
    finally:
        store.close()
    code = pairing_code(new.code, fp)
    if args.json:
        print(json.dumps({"code": code, "url": url, "fingerprint": fp, "name": new.name, "role": new.role,
                          "expires_at": new.expires_at}))
        return 0
    print(f"Pairing code: {code}")
    print(f"  for user {new.name} ({new.role}); works once, until {new.expires_at[11:16]} UTC "
          f"({pairing.CODE_MINUTES} minutes)")
    print(f"Engine address: {url}")
    print(f"Practice CA fingerprint (SHA-256): {':'.join(fp[i:i + 2] for i in range(0, len(fp), 2)).upper()}")
    print("On the front-desk PC: in the tray choose \"Connect to a practice server\", or run")
    print(f"  chargebridge pair --connect {url} {code}")
    return 0


def _connect(ctx: Context, args: argparse.Namespace) -> int:
    from core import pairing

    if not args.code:
        raise ConfigError("the pairing code is missing", "chargebridge pair --connect URL CODE", key="code")
    paired = pairing.connect(args.connect, args.code, home=ctx.paths.home)
    remote = pairing.save(ctx.paths, paired)
    if args.json:
        print(json.dumps({"url": remote.url, "name": remote.name, "role": remote.role,
                          "fingerprint": remote.fingerprint}))
        return 0
    print(f"paired with {remote.url} as {remote.name} ({remote.role})")
    print(f"  the practice CA is pinned in {remote.ca_file}; the token is in this computer's keyring")
    return 0
