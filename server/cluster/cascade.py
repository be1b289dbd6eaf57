"""Media origin → edge cascade across the nodes of a cluster (docs/scaleout.md, "Media").

Why: the relay (media/relay.py) fans a stream out only to viewers on the node that holds the
publisher. In a cluster a load balancer sends viewers to any node, so:

- **Origin.** A node with a local publisher for room R claims R in Redis: the key
  ``P{media:R}:origin`` holds the node's reachable websocket URL (``--advertise-url``), set on
  ``publish``, refreshed every ``interval_s`` while the publisher is here, with a TTL
  (``ttl_s``) so a killed node's claim lapses by itself, and deleted (only if still ours) on
  ``unpublish``, a dropped streamer socket and drain. The latest publisher wins: a streamer
  who republishes on node C overwrites A's claim, and A's refresh never takes it back.
- **Edge.** A ``watch`` for R on a node without a local publisher looks the origin up and,
  once per room per node however many viewers it has, pulls the stream: it opens a websocket
  to the origin as a service peer (a viewer token for R alone, minted with the shared
  ``--secret``), and the relay's ``pull`` makes a recvonly offer that travels as that peer's
  ``watch`` (with ``local: true``, so the origin answers only from a local publisher and
  never cascades further: no loops). The origin treats the edge as one more viewer; the edge
  feeds what it receives into its own forwarders, so keyframes, PLI (throttled at each hop:
  an edge viewer's PLI reaches the origin's publisher) and NACK repair are the relay's.
- **Upkeep** (every ``interval_s``): a pull whose room has had no viewer for ``grace_s`` is
  ended (the origin sees its viewer leave); a pull whose origin moved (the key names another
  node) or died (its websocket or peer connection is gone) is replaced by a pull from the
  current origin, and the edge's viewers keep their connections: the relay re-anchors their
  numbering as it does for a publisher reconnect. The same holds on a former origin: viewers
  left without a source when its publisher went (``MediaRelay.stranded_rooms``) are fed by a
  pull from the node that claims the room now.

Redis cost: one GET per pulled room and one script per published room per interval, on
each node; nothing per viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError
from websockets.exceptions import WebSocketException

from client_sdk import Client, EventStream
from client_sdk.errors import SoukError as ClientError
from client_sdk.protocol import Code
from client_sdk.tokens import mint_token
from media.errors import MediaError
from media.relay import EDGE, PUBLISHER, MediaRelay
from server.config import Config
from server.periodic import every

log = logging.getLogger("souk.cascade")

# KEYS: origin key.  ARGV: url, ttl ms.  Refresh our claim, or take a lapsed one back (Redis
# restarted while we publish); never overwrite another node's newer claim.
REFRESH_LUA = """
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: origin key.  ARGV: url.  Delete the claim only if it is still ours.
WITHDRAW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

EDGE_TOKEN_TTL_S = 24 * 3600  # the edge's socket authenticates once; reconnects mint anew


def advertise_url(cfg: Config, worker_port: int | None) -> str:
    """Where other nodes reach this one for media pulls: a worker's private port under
    --workers, else --advertise-url, else derived from --host/--port (--rtc-host when
    listening on every interface)."""
    port = cfg.port
    if worker_port is not None:
        port = worker_port
    elif cfg.advertise_url:
        return cfg.advertise_url
    host = cfg.host
    if host in ("", "0.0.0.0", "::"):
        host = cfg.rtc_host
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{port}/ws"



@dataclass(eq=False)
class _Pull:
    room: str
    url: str
    source_id: str
    client: Client
    idle_since: float | None = None
    notices: EventStream | None = None  # the origin's `rewatch` (its media worker restarted)

    def told_to_rewatch(self) -> bool:
        return self.notices is not None and not self.notices.queue.empty()

    async def close(self) -> None:
        if self.notices is not None:
            self.notices.close()
        await self.client.close()


class MediaCascade:
    """Origin claims and edge pulls of one node, over the cluster's Redis."""

    def __init__(
        self,
        relay: MediaRelay,
        redis: Redis,
        *,
        advertise_url: str,
        secret: str,
        node_id: str,
        prefix: str = "souk:",
        ttl_s: float = 10.0,
        interval_s: float = 1.0,
        grace_s: float = 5.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not advertise_url.startswith(("ws://", "wss://")):
            raise ValueError(f"advertise_url must be a ws:// or wss:// URL, got {advertise_url!r}")
        self.relay = relay
        self.redis = redis
        self.advertise_url = advertise_url
        self.secret = secret
        self.node_id = node_id
        self.prefix = prefix
        self.ttl_ms = int(ttl_s * 1000)
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.connect_timeout_s = connect_timeout_s
        self.pulls_started = 0  # monotonic: each pull set up (a re-pull counts again)
        self.pulls_ended = 0
        self._pulls: dict[str, _Pull] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._refresh = self.redis.register_script(REFRESH_LUA)
        self._withdraw = self.redis.register_script(WITHDRAW_LUA)

    def key(self, room: str) -> str:
        return f"{self.prefix}{{media:{room}}}:origin"

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            every(self.interval_s, self.tick, "media cascade upkeep", log, (RedisError, OSError)))

    async def stop(self) -> None:
        """Give up every claim (viewers elsewhere fail over at once, not after the TTL) and
        every pull (the origins see their edge viewer leave)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for room in self.relay.published_rooms():
            with contextlib.suppress(RedisError, OSError):
                await self._withdraw(keys=[self.key(room)], args=[self.advertise_url])
        for room, pull in list(self._pulls.items()):
            await self._end(room, pull)

    # ---- origin side --------------------------------------------------------------------
    async def advertise(self, room: str) -> None:
        """A streamer published ``room`` here: this node is its origin from now on."""
        try:
            await self.redis.set(self.key(room), self.advertise_url, px=self.ttl_ms)
        except (RedisError, OSError) as exc:  # the upkeep loop claims it when Redis is back
            log.warning("cannot advertise the origin of %s: %s", room, exc)

    async def withdraw(self, room: str) -> None:
        """The streamer left: drop the claim unless this node still publishes the room, or
        another node claimed it since."""
        source = self.relay.source_of(room)
        if source is not None and source[0] == PUBLISHER:
            return
        try:
            await self._withdraw(keys=[self.key(room)], args=[self.advertise_url])
        except (RedisError, OSError) as exc:  # the claim lapses after ttl_s anyway
            log.warning("cannot withdraw the origin of %s: %s", room, exc)

    async def origin(self, room: str) -> str | None:
        """The websocket URL of the node publishing ``room``, if any node claims it."""
        value = await self.redis.get(self.key(room))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    # ---- edge side ----------------------------------------------------------------------
    async def ensure_pull(self, room: str) -> None:
        """Make sure ``room`` has a source here, pulling it from its origin if needed.

        Concurrent watches of one room wait for one pull. Raises MediaError Code.NOT_FOUND when
        no node publishes the room, Code.UNAVAILABLE when the origin cannot be reached.
        """
        if self.relay.source_of(room) is not None:
            return
        lock = self._locks.setdefault(room, asyncio.Lock())
        async with lock:
            if self.relay.source_of(room) is not None:
                return
            try:
                url = await self.origin(room)
            except (RedisError, OSError) as exc:
                raise MediaError(Code.UNAVAILABLE, "the cluster's media directory is unreachable") from exc
            if url is None or url == self.advertise_url:
                raise MediaError(Code.NOT_FOUND, f"nothing is published in room {room!r}")
            await self._pull(room, url)

    async def _pull(self, room: str, url: str) -> None:
        """Open a service socket to the origin and make the relay pull through it."""
        token = mint_token(self.secret, f"edge.{self.node_id}", name="media edge",
                           role="viewer", rooms=[room], ttl_s=EDGE_TOKEN_TTL_S)
        client = Client(url, token, reconnect=False, open_timeout=self.connect_timeout_s,
                        request_timeout=self.connect_timeout_s)
        source_id = f"edge{next(self._ids)}:{url}"[:128]

        async def signal(offer: str) -> str:
            reply = await client.request("watch", room=room, sdp=offer, local=True)
            answer = reply.get("sdp")
            if not isinstance(answer, str):
                raise MediaError(Code.UNAVAILABLE, "the origin answered without an sdp")
            return answer

        try:
            await client.connect()
            await self.relay.pull(room, source_id, signal)
        except BaseException as exc:
            await client.close()
            if isinstance(exc, ClientError):
                code = Code.NOT_FOUND if exc.code == Code.NOT_FOUND else Code.UNAVAILABLE
                raise MediaError(code, f"the origin refused the pull: {exc}") from None
            if isinstance(exc, OSError | TimeoutError | WebSocketException):
                raise MediaError(Code.UNAVAILABLE, f"the origin {url} is unreachable: {exc}") from None
            raise
        self.pulls_started += 1
        old = self._pulls.get(room)
        notices = client.events(ch=f"room:{room}", types=["rewatch"])
        self._pulls[room] = _Pull(room, url, source_id, client, notices=notices)
        if old is not None:
            await old.close()
        log.info("pulling %s from %s", room, url)

    async def _end(self, room: str, pull: _Pull) -> None:
        if self._pulls.get(room) is pull:
            del self._pulls[room]
        await self.relay.end_pull(room, pull.source_id)
        await pull.close()
        self.pulls_ended += 1
        lock = self._locks.get(room)
        if lock is not None and not lock.locked():
            del self._locks[room]
        log.info("stopped pulling %s from %s", room, pull.url)

    def pulling(self) -> dict[str, str]:
        """Room → origin URL of every pull of this node (for metrics and tests)."""
        return {room: pull.url for room, pull in self._pulls.items()}

    # ---- upkeep -------------------------------------------------------------------------
    async def tick(self) -> None:
        """Refresh this node's claims; end idle pulls; follow origins that moved or died."""
        for room in self.relay.published_rooms():  # a handful per node: no pipeline needed
            await self._refresh(keys=[self.key(room)], args=[self.advertise_url, self.ttl_ms])
        now = time.monotonic()
        for room, pull in list(self._pulls.items()):
            if self.relay.source_of(room) != (EDGE, pull.source_id):
                # a streamer published here (or the room was closed): the pull is moot
                if self._pulls.get(room) is pull:
                    del self._pulls[room]
                await pull.close()
                self.pulls_ended += 1
                continue
            if self.relay.viewer_count(room) == 0:
                pull.idle_since = pull.idle_since or now
                if now - pull.idle_since >= self.grace_s:
                    await self._end(room, pull)
                continue
            pull.idle_since = None
            url = await self.origin(room)
            dead = (not pull.client.connected or pull.told_to_rewatch()
                    or self.relay.source_state(room) in ("failed", "closed"))
            if url is None or url == self.advertise_url or (url == pull.url and not dead):
                continue  # nobody else publishes (viewers wait), or all is well
            lock = self._locks.setdefault(room, asyncio.Lock())
            async with lock:
                if self._pulls.get(room) is not pull:
                    continue
                try:
                    await self._pull(room, url)
                except MediaError as exc:
                    log.warning("re-pulling %s from %s failed: %s", room, url, exc.message)
        for room in self.relay.stranded_rooms():
            await self._rescue(room)

    async def _rescue(self, room: str) -> None:
        """Viewers here lost their source: this node's publisher left (a streamer whose page
        reloaded onto another node, say) and nothing feeds them. If another node claims the
        room now, pull it from there; the viewers keep their connections and the relay
        re-anchors them as for a publisher reconnect. Without this they would hold a frozen
        picture until they re-watched: their peer connection to this node never fails."""
        url = await self.origin(room)
        if url is None or url == self.advertise_url:
            return  # nobody publishes it (yet): the viewers wait, as on one node
        lock = self._locks.setdefault(room, asyncio.Lock())
        async with lock:
            if self.relay.source_of(room) is not None:
                return  # a watch pulled it (or the streamer came back here) meanwhile
            try:
                await self._pull(room, url)
            except MediaError as exc:
                log.warning("pulling %s from %s for its waiting viewers failed: %s", room, url,
                            exc.message)
