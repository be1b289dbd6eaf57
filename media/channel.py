"""The local socket between the relay's ingest and one media worker.

One ``AF_UNIX``/``SOCK_SEQPACKET`` socket pair per worker carries, in order, both kinds of
message: media packets (``media.packet.pack``, first byte ``PACKET_TAG``, or several in one
``pack_batch`` message) and control messages (first byte ``CONTROL_TAG``, then a msgpack map:
stream openings, watches and their answers, stats). Sequenced packets keep message boundaries and order, so a stream's opening always
reaches the worker before the stream's first packet, and one read is one message.

Loss policy: a control message is never dropped (it waits in a queue until the socket drains);
a media packet is dropped when the socket is full or control messages are waiting, so a slow
worker loses packets (repaired downstream by NACK and PLI, like any network loss) instead of
growing an unbounded queue in the ingest. Every packet sent or dropped is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack

from client_sdk.protocol import Code
from media.errors import MediaError
from media.packet import BATCH_TAG, PACKET_TAG, unpack_batch

log = logging.getLogger(__name__)

CONTROL_TAG = 0x43
MAX_MESSAGE = 256 * 1024  # an SDP is at most 64 KiB; packets are under 1.5 KiB
SOCKET_BUFFER = 4 * 1024 * 1024  # asked for; the kernel caps it at its wmem/rmem maximum
READS_PER_WAKEUP = 256  # then let the loop run other callbacks (the socket stays readable)

Message = dict[str, Any]


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of sequenced-packet sockets with large buffers."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    return a, b


class Channel:
    """One end of a worker's socket, driven by the running event loop.

    ``on_packet(view)`` gets each media packet (a memoryview valid only during the call),
    ``on_message(message)`` each control message that is not a reply, ``on_close()`` once when
    the other end goes away (EOF or an error). :meth:`request` sends a message with an ``id``
    and waits for the message that answers it (``re`` = that id).
    """

    def __init__(
        self,
        sock: socket.socket,
        on_packet: Callable[[memoryview], None],
        on_message: Callable[[Message], None],
        on_close: Callable[[], None],
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.on_packet = on_packet
        self.on_message = on_message
        self.on_close = on_close
        self.closed = False
        self.packets_sent = 0
        self.packets_dropped = 0
        self._buffer = bytearray(MAX_MESSAGE)
        self._view = memoryview(self._buffer)
        self._queue: deque[bytes] = deque()
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self._ids = itertools.count(1)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    # ------------------------------------------------------------------ sending

    def send_packet(self, data: bytes) -> None:
        """Send one packed media packet now, or drop it (see the module docstring)."""
        if self.closed or self._queue:
            self.packets_dropped += 1
            return
        try:
            self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            self.packets_dropped += 1
            return
        except OSError:
            self._lost()
            return
        self.packets_sent += 1

    def send(self, message: Message) -> None:
        """Send a control message, in order, whatever the socket's state."""
        if self.closed:
            return
        data = bytes([CONTROL_TAG]) + msgpack.packb(message)
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"control message of {len(data)} bytes is over {MAX_MESSAGE}")
        if not self._queue:
            try:
                self.sock.send(data)
                return
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self.sock.fileno(), self._writable)
            except OSError:
                self._lost()
                return
        self._queue.append(data)

    def _writable(self) -> None:
        while self._queue:
            try:
                self.sock.send(self._queue[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._lost()
                return
            self._queue.popleft()
        self._loop.remove_writer(self.sock.fileno())

    async def request(self, message: Message, timeout_s: float) -> Message:
        """Send ``message`` and wait for its answer; a MediaError if the worker refuses
        (``error``: a media error code), is gone, or does not answer in time."""
        if self.closed:
            raise MediaError(Code.UNAVAILABLE, "the media worker is gone")
        rid = next(self._ids)
        future: asyncio.Future[Message] = self._loop.create_future()
        self._waiting[rid] = future
        try:
            self.send({**message, "id": rid})
            reply = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise MediaError(Code.UNAVAILABLE, "the media worker did not answer in time") from None
        finally:
            self._waiting.pop(rid, None)
        if "error" in reply:
            raise MediaError(str(reply["error"]), str(reply.get("message", "")))
        return reply

    def reply(self, request: Message, **fields: Any) -> None:
        self.send({"re": request.get("id"), **fields})

    # ------------------------------------------------------------------ receiving

    def _readable(self) -> None:
        view = self._view
        for _ in range(READS_PER_WAKEUP):
            try:
                n = self.sock.recv_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._lost()
                return
            if n == 0:
                self._lost()
                return
            try:
                if view[0] == BATCH_TAG:
                    for packet in unpack_batch(view[:n]):
                        self.on_packet(packet)
                elif view[0] == PACKET_TAG:
                    self.on_packet(view[:n])
                elif view[0] == CONTROL_TAG:
                    self._dispatch(msgpack.unpackb(view[1:n]))
            except Exception:
                log.exception("a media worker message could not be handled")

    def _dispatch(self, message: Message) -> None:
        rid = message.get("re")
        if rid is not None:
            future = self._waiting.get(rid)
            if future is not None and not future.done():
                future.set_result(message)
            return
        self.on_message(message)

    # ------------------------------------------------------------------ closing

    def _lost(self) -> None:
        if self.closed:
            return
        self.close()
        self.on_close()

    def close(self) -> None:
        """Stop reading and writing and close the socket (the other end sees EOF)."""
        if self.closed:
            return
        self.closed = True
        fd = self.sock.fileno()
        with contextlib.suppress(Exception):
            self._loop.remove_reader(fd)
        with contextlib.suppress(Exception):
            self._loop.remove_writer(fd)
        self.sock.close()
        self._queue.clear()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(MediaError(Code.UNAVAILABLE, "the media worker is gone"))
