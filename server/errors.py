"""Typed errors: every refusal carries a stable protocol code (client_sdk.protocol.Code).

The class is defined with the rules that raise most refusals (`server.domain.errors`), so the
domain needs no import from the server; everything outside the domain imports it from here.
"""

from __future__ import annotations

from server.domain.errors import SoukError

__all__ = ["SoukError"]
