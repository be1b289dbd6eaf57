"""Test sources and sinks for the media relay (used by tests/media and the load tests)."""

from media.testing.peers import PublisherPeer, RtpSinkViewer, ViewerPeer, loopback
from media.testing.stamp import FrameSink, StampedVideoTrack, read_stamp

__all__ = [
    "FrameSink",
    "PublisherPeer",
    "RtpSinkViewer",
    "StampedVideoTrack",
    "ViewerPeer",
    "loopback",
    "read_stamp",
]
