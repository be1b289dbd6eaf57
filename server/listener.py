"""The listening sockets: the websocket server's options, the subprotocol choice, and the URL
other nodes reach this process at.

Why a module of its own: these are the process's edges (ports, backlog, frame limits,
keep-alive), set once and easy to get subtly wrong; the composition root only says when to
listen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import NegotiationError
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from client_sdk.protocol import SUBPROTOCOLS
from server.config import Config


def select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """The client's first supported choice; none offered means JSON (browsers, curl)."""
    if not offered:
        return None
    for sp in offered:
        if sp in SUBPROTOCOLS:
            return sp
    raise NegotiationError("unsupported subprotocol; offer souk.v1.msgpack or souk.v1.json")


async def listen(
    cfg: Config,
    handler: Callable[[ServerConnection], Awaitable[None]],
    http: Callable[[ServerConnection, Request], Awaitable[Response | None]],
    port: int,
    *,
    reuse_port: bool,
) -> Server:
    """Websockets at `/ws` and HTTP (`http` answers every other path) on one port."""
    return await serve(
        handler, cfg.host, port, process_request=http,
        select_subprotocol=select_subprotocol, subprotocols=[Subprotocol(s) for s in SUBPROTOCOLS],
        compression=None, max_size=cfg.max_ws_bytes, max_queue=32,
        ping_interval=20, ping_timeout=20, close_timeout=2, reuse_port=reuse_port,
        # a join burst must queue, not overflow: a dropped SYN costs the client 1 s+
        backlog=4096, server_header="Souk",
    )


def port_of(server: Server) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])


def advertise_url(cfg: Config, worker_server: Server | None) -> str:
    """Where other nodes reach this one for media pulls: a worker's private port under
    --workers, else --advertise-url, else derived from --host/--port (--rtc-host when
    listening on every interface)."""
    port = cfg.port
    if worker_server is not None:
        port = port_of(worker_server)
    elif cfg.advertise_url:
        return cfg.advertise_url
    host = cfg.host
    if host in ("", "0.0.0.0", "::"):
        host = cfg.rtc_host
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{port}/ws"
