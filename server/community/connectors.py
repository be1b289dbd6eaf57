"""A node's connectors to external groups: outbound delivery, the inbound listener, dead letters.

Why a class of its own: the connectors have state nobody else touches (the connectors by id,
the delivery queues, the webhook listener that starts only once a connector exists) and a life
cycle of their own; the rest of the adapter only hands them items for a room (`to_room`).
Answers that come in are still the Q&A code's business (`Community.answer_from_connector`).
The platforms' formats and the HTTP sides live in server/connectors/.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from client_sdk.protocol import Code
from server.community.frames import _new_id
from server.connectors.addresses import check_url_host
from server.connectors.delivery import Delivery
from server.connectors.formats import Connector, parse_connector
from server.connectors.inbound import InboundListener
from server.domain.qa import Question
from server.errors import SoukError

if TYPE_CHECKING:
    from server.community.adapter import Community

log = logging.getLogger("souk.community")


class ConnectorHub:
    """The connectors of one community adapter (`Community.hub`).

    `webhook_port`: None = no inbound listener; 0 = an ephemeral port (tests); otherwise the
    `--webhook-port`. The listener starts only once a connector exists.
    """

    def __init__(
        self,
        community: Community,
        *,
        webhook_host: str,
        webhook_port: int | None,
        max_attempts: int,
        base_backoff_s: float,
        max_backoff_s: float,
        allow_private: bool = False,
    ) -> None:
        # the adapter, for what it owns: the store, the clock, publish, cluster notices,
        # and the answers that come in
        self.community = community
        self.connectors: dict[str, Connector] = {}
        self.delivery = Delivery(
            community.clock_ms,
            self.dead_letter,
            max_attempts=max_attempts,
            base_backoff_s=base_backoff_s,
            max_backoff_s=max_backoff_s,
            allow_private=allow_private,
        )
        self.allow_private = allow_private
        self.webhook_host = webhook_host
        self.webhook_port = webhook_port
        self.inbound: InboundListener | None = None

    async def start(self, raws: list[dict[str, Any]]) -> None:
        """Take the stored connectors (`raws`, from the store's load) and start delivering."""
        for raw in raws:
            self.add(raw)
        await self.delivery.start()
        if self.connectors:
            await self.ensure_inbound()

    def add(self, raw: dict[str, Any]) -> Connector:
        conn = Connector(
            raw["id"],
            raw["shop"],
            raw["room"],
            raw["platform"],
            raw["url"],
            raw["secret"],
            raw["created_at"],
            raw["config"],
        )
        self.connectors[conn.id] = conn
        self.delivery.add(conn)
        return conn

    async def stop(self) -> None:
        if self.inbound is not None:
            await self.inbound.stop()
            self.inbound = None
        for conn, item in await self.delivery.stop():
            await self.dead_letter(conn, item, "not delivered before shutdown", 0)

    async def create(
        self, shop: str, fields: dict[str, Any], user: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Register an external group (admin). The reply carries the secret, shown once."""
        c = self.community
        if user is not None and user.get("role") not in ("admin", "streamer"):
            raise SoukError(Code.FORBIDDEN, "only admins and streamers create connectors")
        secret = fields.get("secret") if isinstance(fields, dict) else None
        if secret is not None and (not isinstance(secret, str) or not 16 <= len(secret) <= 256):
            raise SoukError(Code.INVALID, "secret must be 16..256 characters")
        conn = parse_connector(
            _new_id("c"), shop, fields, secret or secrets.token_urlsafe(32), c.clock_ms()
        )
        if not self.allow_private:  # SSRF: public addresses only (server/connectors/addresses.py)
            parts = urlsplit(conn.url)
            await check_url_host(parts.hostname or "",
                                 parts.port or (443 if parts.scheme == "https" else 80))
        await c.store.save_connector(conn.to_dict(with_secret=True))
        self.connectors[conn.id] = conn
        self.delivery.add(conn)
        await self.ensure_inbound()
        c._notify("c", id=conn.id)
        out = conn.to_dict(with_secret=True)
        if self.inbound is not None:
            out["inbound_url"] = f"http://{self.webhook_host}:{self.inbound.port}/hooks/{conn.id}"
        return out

    async def ensure_inbound(self) -> None:
        if self.inbound is None and self.webhook_port is not None:
            self.inbound = InboundListener(
                self.lookup,
                self.community.answer_from_connector,
                self.community.clock_ms,
                host=self.webhook_host,
                port=self.webhook_port,
            )
            await self.inbound.start()

    async def lookup(self, cid: str) -> Connector | None:
        """The inbound listener's lookup: a connector created on another node is loaded."""
        conn = self.connectors.get(cid)
        store = self.community.store
        if conn is None and store.shared and 1 <= len(cid) <= 64:
            raw = await store.load_connector(cid)
            if raw is not None:
                conn = self.connectors.get(cid) or self.add(raw)
        return conn

    def to_room(self, room: str, item: dict[str, Any], *, skip: str | None = None) -> None:
        """Queue `item` for every connector of `room` (but `skip`, the one it came from)."""
        for conn in self.delivery.connectors_for(room):
            if conn.id != skip:
                self.delivery.enqueue(conn.id, item)

    async def dead_letter(
        self, conn: Connector, item: dict[str, Any], error: str, attempts: int
    ) -> None:
        c = self.community
        ts = c.clock_ms()
        dl_id: int | None = None
        try:
            dl_id = await c.store.add_dead_letter(conn.id, conn.room, item, error, attempts, ts)
        except Exception:
            log.exception("could not persist a dead letter for connector %s", conn.id)
        c.publish(
            f"staff:{conn.room}",
            "connector_dead_letter",
            {
                "id": dl_id,
                "connector": conn.id,
                "platform": conn.platform,
                "item": item,
                "error": error,
                "attempts": attempts,
                "ts": ts,
            },
        )


def question_item(q: Question) -> dict[str, Any]:
    return {
        "type": "question",
        "question": q.id,
        "room": q.room,
        "name": q.name,
        "text": q.text,
        "votes": q.votes,
        "asked_at": q.asked_at,
    }


def answer_item(q: Question) -> dict[str, Any]:
    return {
        "type": "answer",
        "question": q.id,
        "room": q.room,
        "name": q.name,
        "text": q.text,
        "answer": q.answer,
        "answered_by": q.answered_by,
        "on_stream": q.on_stream,
    }
