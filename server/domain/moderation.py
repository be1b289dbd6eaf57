"""The link/ad filter and the warn → mute → remove ladder, as pure policy.

Why a filter at all: "no ads or self-promotion by members" is the first rule of every
merchant's group, and the ads that matter are links, domains, phone numbers and
WeChat ids ("加V: abc123"), often disguised with full-width characters, spaces or "点com".
Text is normalised (NFKC, lower case, zero-width characters removed) before matching.
Staff (streamer, moderator, admin) are exempt: they post the shop's own links.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from client_sdk.protocol import Code
from server.domain.errors import SoukError

EXEMPT_ROLES = frozenset({"streamer", "moderator", "admin"})

_TLDS = (
    "com|cn|net|org|io|co|cc|me|tv|info|biz|top|xyz|vip|shop|store|site|online|app|link|club|"
    "live|ltd|hk|tw|jp|uk|de|ru|in|us|ly|gl|gg|to|tk|ml|ga|cf|work|fun|icu|wang|ink|pub"
)
_URL = re.compile(r"(?:https?|ftp)://|www\.|t\.me/|wa\.me/")
_DOMAIN = re.compile(
    rf"\b[a-z0-9][a-z0-9-]{{0,62}}(?:\.[a-z0-9-]{{1,63}})*(?:\.|\s*(?:点|dot)\s*)(?:{_TLDS})\b"
)
# Chinese mobile numbers (11 digits starting 1[3-9]) and any run of 10+ digits, with separators
_PHONE = re.compile(
    r"(?<!\d)(?:\+?86[\s-]?)?1[3-9](?:[\s-]?\d){9}(?!\d)|(?<!\d)\d(?:[\s-]?\d){9,}(?!\d)"
)
_CONTACT = re.compile(
    r"(?:微信|威信|薇信|卫星|v信|vx|wx|weixin|wechat|加v|加微|私聊|qq|扣扣|telegram|tg|whatsapp|line)"
    r"\s*(?:号|id)?\s*[:=是]?\s*[a-z0-9][-_a-z0-9]{4,19}"
)
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)


def normalise(text: str) -> str:
    """Undo the usual disguises: full-width forms, zero-width joiners, 。 for dots, case."""
    text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).lower()
    return text.replace("。", ".").replace("·", ".")


@dataclass(frozen=True)
class FilterConfig:
    """What the filter refuses. Domains in `allowed_domains` (the shop's own) pass."""

    block_links: bool = True
    block_phone: bool = True
    block_contact_ids: bool = True
    words: tuple[str, ...] = ()
    allowed_domains: tuple[str, ...] = ()

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> FilterConfig:
        def words(key: str) -> tuple[str, ...]:
            value = raw.get(key, ())
            if not isinstance(value, list | tuple) or not all(
                isinstance(w, str) and w for w in value
            ):
                raise SoukError(Code.INVALID, f"{key} must be a list of non-empty strings")
            return tuple(normalise(w) for w in value)

        flags = {}
        for key in ("block_links", "block_phone", "block_contact_ids"):
            value = raw.get(key, True)
            if not isinstance(value, bool):
                raise SoukError(Code.INVALID, f"{key} must be a boolean")
            flags[key] = value
        return FilterConfig(words=words("words"), allowed_domains=words("allowed_domains"), **flags)


class LinkFilter:
    """Refuses links, domains, phone numbers, contact ids and configured words."""

    def __init__(self, config: FilterConfig | None = None) -> None:
        self.config = config or FilterConfig()

    def reason(self, text: str) -> str | None:
        """Why this text would be refused, or None when it passes."""
        t = normalise(text)
        cfg = self.config
        for word in cfg.words:
            if word in t:
                return "word"
        if cfg.block_links:
            if _URL.search(t):
                return "link"
            for m in _DOMAIN.finditer(t):
                found = re.sub(r"\s*(?:点|dot)\s*", ".", m.group(0)).replace(" ", "")
                if not any(found == d or found.endswith("." + d) for d in cfg.allowed_domains):
                    return "link"
        if cfg.block_contact_ids and _CONTACT.search(t):
            return "contact"
        if cfg.block_phone and _PHONE.search(t):
            return "phone"
        return None

    def check(self, text: str, role: str | None) -> None:
        """Raise SoukError(Code.FILTERED) unless the text passes or the author is staff."""
        if role in EXEMPT_ROLES:
            return
        why = self.reason(text)
        if why is not None:
            raise SoukError(Code.FILTERED, f"message refused: no {why}s or ads, please", reason=why)


# -- the escalation ladder -------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """What to do about an offence: `warn`, `mute` (for `seconds`) or `remove`."""

    kind: str
    seconds: int | None = None
    offences: int = 1


@dataclass
class Ladder:
    """warn → mute → remove: the Nth offence within `window_s` takes the Nth step.

    Offences older than the window are forgotten, so a member who broke a rule once last
    month starts again at a warning.
    """

    steps: tuple[str, ...] = ("warn", "mute", "remove")
    mute_s: int = 600
    window_s: int = 7 * 86_400
    offences: dict[str, list[int]] = field(default_factory=dict)

    def offend(self, user: str, now_ms: int) -> Action:
        horizon = now_ms - self.window_s * 1000
        history = [t for t in self.offences.get(user, []) if t > horizon]
        history.append(now_ms)
        self.offences[user] = history
        step = self.steps[min(len(history), len(self.steps)) - 1]
        return Action(step, self.mute_s if step == "mute" else None, len(history))

    def forgive(self, user: str) -> None:
        self.offences.pop(user, None)
