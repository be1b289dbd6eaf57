"""Op handlers; importing this package registers every op in the table."""

from server.ops import channels, community, connect, room
from server.ops.registry import OPS

__all__ = ["OPS", "channels", "community", "connect", "room"]
