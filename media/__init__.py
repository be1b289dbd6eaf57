"""Souk media: a forwarding WebRTC relay (SFU) on aiortc. See docs/media.md."""

from media.errors import MediaError
from media.relay import MediaRelay

__all__ = ["MediaError", "MediaRelay"]
