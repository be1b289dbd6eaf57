"""`souk serve` runs a server; `souk token` mints an access token from the command line;
`souk draw-verify` recomputes a lucky draw from what it published."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys

import uvloop

from client_sdk.protocol import Role
from client_sdk.tokens import mint_token
from server.config import DEMO_SECRET, add_serve_arguments, config_from
from server.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="souk", description="Souk live-commerce interaction server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the server")
    add_serve_arguments(serve_p)
    tok = sub.add_parser("token", help="mint an access token (JWT HS256)")
    tok.add_argument("--secret", default=None, help="signing secret (default: $SOUK_SECRET)")
    tok.add_argument("--sub", required=True, help="user id")
    tok.add_argument("--name", default=None)
    tok.add_argument("--role", default="viewer", choices=Role.ALL)
    tok.add_argument("--room", action="append", required=True,
                     help="room id it may enter (repeatable; an explicit '*' for every room)")
    tok.add_argument("--group", action="append", default=None, help="group id it may enter (repeatable)")
    tok.add_argument("--shop", default=None)
    tok.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    from server import draw_verify

    draw_verify.add_arguments(sub.add_parser(
        "draw-verify", help="check a lucky draw: commitment, entrant list, winners"))
    args = parser.parse_args(argv)

    if args.command == "draw-verify":
        return draw_verify.run(args)

    if args.command == "token":
        import os

        secret = args.secret or os.environ.get("SOUK_SECRET") or ""
        if not secret:
            print("souk token: --secret or SOUK_SECRET is required", file=sys.stderr)
            return 3
        print(mint_token(secret, args.sub, name=args.name, role=args.role, rooms=args.room,
                         groups=args.group or [], ttl_s=args.ttl, shop=args.shop))
        return 0

    cfg = config_from(args)
    setup_logging(cfg.log_level)
    if cfg.workers > 1:
        from server.workers import run_workers

        return int(run_workers(cfg))
    from server.app import App

    app = App(cfg)
    uvloop.run(_serve(app))
    return 0


async def _serve(app: object) -> None:
    from server.app import App

    assert isinstance(app, App)
    await app.start()
    # Everything imported and built so far lives as long as the process: move it out of the
    # collector's view, and collect young objects less often, so that a full collection
    # over a few hundred thousand long-lived objects does not stall every connection.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    cfg = app.cfg
    base = f"http://{cfg.host}:{cfg.port}"
    import logging

    logging.getLogger("souk").info("listening", extra={"url": base, "ws": f"ws://{cfg.host}:{cfg.port}/ws"})
    if cfg.demo:
        _print_demo(app)
    await _wait_for_signal(app)


async def _wait_for_signal(app: object) -> None:
    import signal

    from server.app import App

    assert isinstance(app, App)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await app.drain()


def _print_demo(app: object) -> None:
    from server.app import App

    assert isinstance(app, App)
    cfg = app.cfg
    base = f"http://{cfg.host}:{cfg.port}"
    lines = [
        "",
        "Souk is running (demo mode).",
        f"  websocket : ws://{cfg.host}:{cfg.port}/ws",
        f"  health    : {base}/healthz    metrics: {base}/metrics",
    ]
    tokens = {}
    for role in ("streamer", "viewer", "moderator", "member", "admin"):
        tok = app.demo_token({"role": [role], "room": ["demo"], "sub": [f"demo-{role}"], "name": [f"Demo {role}"]})
        tokens[role] = tok["token"]
    lines += [
        f"  studio    : {base}/studio/demo?token={tokens['streamer']}",
        f"  viewer    : {base}/live/demo?token={tokens['viewer']}",
        f"  group     : {base}/group/demo-core?token={tokens['member']}",
        f"  dashboard : {base}/dashboard?token={tokens['admin']}",
        "  tokens (Authorization: Bearer ... or the auth op):",
    ]
    for role, tok in tokens.items():
        lines.append(f"    {role:<9} {tok}")
    lines += [
        "",
        "  !! DEMO MODE: anyone who can reach this port can mint any token, admin included:",
        f"  !!   {base}/api/demo/token?role=admin&sub=anyone",
        "  !! Never run --demo on a port others can reach.",
    ]
    if cfg.secret == DEMO_SECRET:
        lines.append("  (demo secret in use: never expose this server publicly)")
    print("\n".join(lines), flush=True)
    import logging

    logging.getLogger("souk").warning(
        "demo mode: /api/demo/token hands any role to anyone who can reach this port",
        extra={"url": f"{base}/api/demo/token?role=admin&sub=anyone"})


if __name__ == "__main__":
    raise SystemExit(main())
