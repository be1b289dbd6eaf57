"""Fixtures for the media relay tests: a relay whose peers all live on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from media import MediaRelay
from media.testing import loopback


@pytest.fixture
async def relay() -> AsyncIterator[MediaRelay]:
    with loopback():
        r = MediaRelay(rtc_host="127.0.0.1")
        try:
            yield r
        finally:
            await r.close()
