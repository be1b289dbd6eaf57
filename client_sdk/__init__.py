"""Souk Python SDK: `Client` for the websocket protocol, `mint_token` for backends."""

from client_sdk.client import Client, EventStream
from client_sdk.errors import ConnectionLost, SoukError
from client_sdk.protocol import Close, Code, Op
from client_sdk.tokens import mint_token
from client_sdk.watch import MediaPeer, Watch

__all__ = ["Client", "Close", "Code", "ConnectionLost", "EventStream", "MediaPeer", "Op",
           "SoukError", "Watch", "mint_token"]
