"""The link/ad filter (with its disguises) and the warn → mute → remove ladder."""

from __future__ import annotations

import pytest

from server.domain.moderation import FilterConfig, Ladder, LinkFilter
from server.errors import SoukError

F = LinkFilter(FilterConfig(words=("代购", "cheap pills"), allowed_domains=("souk.shop",)))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("see https://x.io/deal", "link"),
        ("www.example.org", "link"),
        ("go to taobao.com now", "link"),
        ("taobao 点 com", "link"),
        ("ｔａｏｂａｏ．ｃｏｍ", "link"),  # full-width disguise
        ("tao\u200bbao.com", "link"),  # zero-width joiner disguise
        ("t.me/joinme", "link"),
        ("加V: abc12345", "contact"),
        ("vx abcdef1", "contact"),
        ("wechat id: shopper_88", "contact"),
        ("call 138 1234 5678", "phone"),
        ("+86 13812345678", "phone"),
        ("代购 here", "word"),
        ("CHEAP PILLS", "word"),
    ],
)
def test_refused(text: str, reason: str) -> None:
    assert F.reason(text) == reason
    with pytest.raises(SoukError) as err:
        F.check(text, "member")
    assert err.value.code == "filtered" and err.value.extra["reason"] == reason


@pytest.mark.parametrize(
    "text",
    [
        "is it organic?",
        "price 2999 yuan, size 38 or 39?",
        "I like it. Com on",
        "version 2.0 weighs 1.5kg",
        "order 12345678",
        "see souk.shop/p/1 and shop.souk.shop",
        "我想要红色的，有货吗？",
    ],
)
def test_passes(text: str) -> None:
    assert F.reason(text) is None
    F.check(text, "viewer")


@pytest.mark.parametrize("role", ["streamer", "moderator", "admin"])
def test_staff_exempt(role: str) -> None:
    F.check("buy at https://my-shop.com", role)


def test_config_switches_and_validation() -> None:
    lenient = LinkFilter(FilterConfig.from_dict({"block_phone": False, "words": ["spam"]}))
    assert lenient.reason("13812345678") is None
    assert lenient.reason("SPAM!") == "word"
    with pytest.raises(SoukError):
        FilterConfig.from_dict({"words": "spam"})
    with pytest.raises(SoukError):
        FilterConfig.from_dict({"block_links": "no"})


def test_ladder_warn_mute_remove_within_window() -> None:
    lad = Ladder(mute_s=600, window_s=3600)
    t = 1_000_000
    assert lad.offend("u1", t).kind == "warn"
    second = lad.offend("u1", t + 1000)
    assert (second.kind, second.seconds) == ("mute", 600)
    assert lad.offend("u1", t + 2000).kind == "remove"
    assert lad.offend("u1", t + 3000).kind == "remove"
    assert lad.offend("u2", t).kind == "warn"  # per user
    # an hour later the old offences are forgotten
    assert lad.offend("u1", t + 3000 + 3_600_001).kind == "warn"
