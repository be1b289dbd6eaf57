"""Op handlers; importing this package registers every op in the table."""

from server.ops import channels, commerce, community, connect, draws, engagement, media, room
from server.ops.registry import OPS

__all__ = ["OPS", "channels", "commerce", "community", "connect", "draws", "engagement", "media",
           "room"]
