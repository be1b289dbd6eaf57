"""Session ops: auth and ping."""

from __future__ import annotations

from typing import TYPE_CHECKING

from client_sdk.protocol import Code, Frame, user_channel
from server.errors import SoukError
from server.ops.registry import SESSION, VIEWERS, Result, op

if TYPE_CHECKING:
    from server.services import Services
    from server.session import Session


@op("auth", roles=VIEWERS, scope=SESSION, auth=False)
async def auth(sv: Services, s: Session, frame: Frame) -> Result:
    if s.identity is not None:
        raise SoukError(Code.CONFLICT, "already authenticated")
    identity = sv.tokens.verify(frame.get("token"))
    s.identity = identity
    s.chat_bucket = sv.chat_buckets.of(identity.id)  # per user, not per connection
    sv.channels.subscribe(s, user_channel(identity.id))
    epoch, seq = await sv.bus.head(user_channel(identity.id))
    return {"user": identity.public(), "ch": user_channel(identity.id), "epoch": epoch, "seq": seq,
            "server_time": sv.clock_ms()}


@op("ping", roles=VIEWERS, scope=SESSION, auth=False, cost=0.5)
async def ping(sv: Services, s: Session, frame: Frame) -> Result:
    return {"pong": sv.clock_ms()}
