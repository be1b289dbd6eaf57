"""Server settings: each flag of `souk serve` also read from a SOUK_* environment variable."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEMO_SECRET = "souk-demo-secret-change-me-not-for-production"


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    secret: str = ""
    demo: bool = False
    log_level: str = "info"
    # protocol limits
    max_frame_bytes: int = 64 * 1024  # above: `too_large` error frame
    max_ws_bytes: int = 1024 * 1024  # above: close 1009 by the transport
    auth_timeout_s: float = 10.0
    ops_per_s: float = 20.0
    ops_burst: float = 40.0
    chat_per_s: float = 1.0
    chat_burst: float = 5.0
    max_channels: int = 32
    strike_limit: int = 30
    strike_window_s: float = 10.0
    max_token_ttl: int = 7 * 24 * 3600  # a token's exp may lie at most this far ahead
    allow_private_webhooks: bool = False  # connectors may POST to private addresses
    room_grace_s: float = 300.0  # an empty room nobody created is freed after this
    # connections (docs/wire.md): per client address, loopback exempt unless limit_loopback
    max_conns_per_ip: int = 1000  # open connections (0: no cap)
    handshakes_per_ip_s: float = 50.0  # new connections per second, burst twice that (0: no cap)
    limit_loopback: bool = False
    http_timeout_s: float = 10.0  # a request head (or an idle keep-alive) within this
    http_body_timeout_s: float = 30.0  # a request body within this after its head
    ping_interval_s: float = 20.0  # a silent websocket is pinged; silent after it: closed
    # fan-out
    tick_ms: float = 10.0
    soft_limit: int = 256 * 1024
    hard_limit: int = 2 * 1024 * 1024
    history: int = 1000
    # timers
    likes_interval_s: float = 0.5
    viewers_interval_s: float = 1.0
    drain_timeout_s: float = 4.0
    # media
    rtc_host: str = "127.0.0.1"
    stun_url: list[str] = field(default_factory=list)
    turn_url: list[str] = field(default_factory=list)
    turn_secret: str = ""
    advertise_url: str = ""  # cluster: this node's websocket URL for media edges ("" = derived)
    edge_grace_s: float = 5.0  # an edge keeps a pull this long after its last viewer left
    media_workers: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))  # 0: in-process
    # connectors / scale-out
    webhook_port: int = 0
    redis: str = ""
    redis_prefix: str = "souk:"
    redis_shard: list[str] = field(default_factory=list)
    postgres: str = ""
    workers: int = 1
    answer_target_s: int = 300
    # lucky draws: a drand-style public randomness beacon mixed into each result ("" = none)
    draw_beacon_url: str = ""
    # replays: record every room's lives (a room's own choice, room_create {record}, wins)
    record: bool = False
    replay_retention_days: float = 0.0  # replays older than this are deleted (0: kept)
    chat_retention_days: float = 0.0  # stored room chat older than this is deleted (0: kept)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "souk.sqlite3"

    def check_backends(self) -> None:
        """The cluster flags that only make sense together (raises SystemExit, like a bad
        flag would)."""
        if self.redis_shard and not self.redis:
            raise SystemExit("souk: --redis-shard needs --redis (the first shard)")
        if self.postgres and not self.redis:
            raise SystemExit("souk: --postgres needs --redis (the stock gate lives there)")


_FLAGS: dict[str, dict[str, Any]] = {
    "host": {"help": "address to listen on"},
    "port": {"type": int, "help": "port for HTTP and websockets"},
    "data_dir": {"type": Path, "help": "where the SQLite database lives"},
    "secret": {"help": "HS256 secret that signs access tokens"},
    "demo": {"action": "store_true", "help": "serve demo tokens and a demo room"},
    "log_level": {"choices": ["debug", "info", "warning", "error"]},
    "rtc_host": {"help": "the only host ICE candidate address offered (public IP in production)"},
    "stun_url": {"action": "append", "help": "STUN server handed to clients (repeatable)"},
    "turn_url": {"action": "append", "help": "TURN server handed to clients (repeatable)"},
    "turn_secret": {"help": "coturn static-auth-secret for time-limited TURN credentials"},
    "advertise_url": {"help": "websocket URL other nodes pull this node's streams from "
                              "(default ws://<host>:<port>/ws; --rtc-host if host is 0.0.0.0)"},
    "edge_grace_s": {"type": float, "help": "seconds an edge keeps pulling after its last viewer"},
    "media_workers": {"type": int, "help": "processes serving WebRTC viewers (default: the "
                                           "number of cores; 0: in the server process)"},
    "webhook_port": {"type": int, "help": "port for inbound signed connector webhooks (0: off)"},
    "redis": {"help": "redis:// URL: run as a node of a cluster"},
    "redis_prefix": {"help": "prefix of every Redis key and channel (one cluster per prefix)"},
    "redis_shard": {"action": "append",
                    "help": "a further Redis for the bus: channels are spread over --redis and "
                            "these by a hash of their name (repeatable; the same list in the "
                            "same order on every node)"},
    "postgres": {"help": "postgresql:// DSN for orders in cluster mode"},
    "workers": {"type": int, "help": "worker processes sharing the port (needs --redis)"},
    "answer_target_s": {"type": int, "help": "seconds before an open question is flagged"},
    "draw_beacon_url": {"help": "drand-style beacon (its base URL: <url>/info, <url>/public/<round>)"
                                " whose first round after a draw's close is mixed into its result"},
    "record": {"action": "store_true",
               "help": "record every room's lives (unless room_create says record: false)"},
    "replay_retention_days": {"type": float,
                              "help": "delete replays older than this many days (0: keep all)"},
    "chat_retention_days": {"type": float,
                            "help": "delete stored room chat older than this many days, swept at"
                                    " start and hourly (0: keep all)"},
    "tick_ms": {"type": float, "help": "fan-out coalescing tick in milliseconds"},
    "max_token_ttl": {"type": int, "help": "refuse tokens whose exp lies further ahead (seconds)"},
    "allow_private_webhooks": {"action": "store_true",
                               "help": "let connector URLs point at loopback, link-local, private"
                                       " or reserved addresses (refused otherwise: SSRF)"},
    "room_grace_s": {"type": float,
                     "help": "seconds an empty room nobody created (no room_create, never live,"
                             " no sale) is kept before it is freed with its histories"},
    "max_conns_per_ip": {"type": int, "help": "open connections per client address (0: no cap)"},
    "handshakes_per_ip_s": {"type": float,
                            "help": "new connections per second per client address (0: no cap)"},
    "limit_loopback": {"action": "store_true",
                       "help": "apply the per-address caps to 127.0.0.1 and ::1 too"},
    "http_timeout_s": {"type": float, "help": "seconds for a request head (and keep-alive idle)"},
    "http_body_timeout_s": {"type": float, "help": "seconds for a request body after its head"},
    "ping_interval_s": {"type": float,
                        "help": "a silent websocket is pinged after this; closed if it stays silent"},
}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    for name, kw in _FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **kw)


def _coerce(value: str, default: Any) -> Any:
    if isinstance(default, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, Path):
        return Path(value)
    if isinstance(default, list):
        return [v for v in value.split(",") if v]
    return value


def config_from(args: argparse.Namespace | None = None, env: dict[str, str] | None = None) -> Config:
    """Flags win over SOUK_* variables, which win over defaults."""
    env = dict(os.environ) if env is None else env
    cfg = Config()
    for f in fields(cfg):
        key = "SOUK_" + f.name.upper()
        if key in env:
            setattr(cfg, f.name, _coerce(env[key], getattr(cfg, f.name)))
        if args is not None:
            value = getattr(args, f.name, None)
            if value is not None and value is not False:
                setattr(cfg, f.name, value)
    if not cfg.secret:
        if cfg.demo:
            cfg.secret = DEMO_SECRET
        else:
            raise SystemExit("souk: --secret (or SOUK_SECRET) is required unless --demo is given")
    return cfg
