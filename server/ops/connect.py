"""Session ops: auth and ping."""

from __future__ import annotations

from typing import TYPE_CHECKING

from client_sdk.protocol import Code, Frame, user_channel
from server.auth import verify_token
from server.errors import SoukError
from server.ops.registry import Result, op

if TYPE_CHECKING:
    from server.app import App
    from server.session import Session


@op("auth", auth=False)
async def auth(app: App, s: Session, frame: Frame) -> Result:
    if s.identity is not None:
        raise SoukError(Code.CONFLICT, "already authenticated")
    identity = verify_token(frame.get("token"), app.cfg.secret, max_ttl_s=app.cfg.max_token_ttl)
    s.identity = identity
    s.chat_bucket = app.chat_buckets.of(identity.id)  # per user, not per connection
    app.subscribe(s, user_channel(identity.id))
    epoch, seq = await app.bus.head(user_channel(identity.id))
    return {"user": identity.public(), "ch": user_channel(identity.id), "epoch": epoch, "seq": seq,
            "server_time": app.clock_ms()}


@op("ping", auth=False, cost=0.5)
async def ping(app: App, s: Session, frame: Frame) -> Result:
    return {"pong": app.clock_ms()}
