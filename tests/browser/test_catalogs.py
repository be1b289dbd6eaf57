"""The pages checked from their files: each page's Chinese and English catalogs have the same
keys, every key the page's markup or modules look up literally is in them (a missing one would
show its key to a person), and nothing the Content-Security-Policy forbids is in the markup or
the modules (the browser tests would see a violation only on the paths they take)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

WEB = ROOT / "server" / "web"
PAGES = {"live": "live.html", "studio": "studio.html", "group": "group.html", "dashboard": "dashboard.html", "replay": "replay.html",
         "index": "index.html"}
IMPORT = re.compile(r"""(?:from\s+|import\()\s*["']/static/([\w./-]+\.js)["']""")
ENTRY = re.compile(r"""<script type="module" src="/static/([\w.-]+\.js)">""")
KEY = re.compile(r"""^\s*(?:"([\w.]+)"|([\w]+)):""", re.M)
LOOKUP = re.compile(r"""\bt\(\s*"([\w.]+)"|\bhas\(\s*"([\w.]+)"|\bi18n:\s*"([\w.]+)\"""")
MARKUP = re.compile(r"""data-i18n(?:-ph|-title)?="([\w.]+)\"""")
EXTEND = re.compile(r"""\bextendCatalog\(\s*"([\w-]+)\"""")  # a module loaded on demand adds its part


def catalog(page: str, lang: str) -> set[str]:
    keys: set[str] = set()
    extra = {part for path in modules(page) for part in EXTEND.findall(path.read_text())}
    for name in (f"common.{lang}.js", f"{page}.{lang}.js", *(f"{part}.{lang}.js" for part in sorted(extra))):
        text = (WEB / "catalog" / name).read_text()
        keys |= {a or b for a, b in KEY.findall(text)}
    return keys


def modules(page: str) -> set[Path]:
    """The page's module graph from its entry script (static and dynamic imports)."""
    entry = ENTRY.search((WEB / PAGES[page]).read_text())
    assert entry, page
    seen: set[Path] = set()
    todo = [WEB / entry.group(1)]
    while todo:
        path = todo.pop()
        if path in seen or "catalog" in path.parts:
            continue
        seen.add(path)
        todo += [WEB / m for m in IMPORT.findall(path.read_text())]
    return seen


@pytest.mark.parametrize("page", sorted(PAGES))
def test_both_languages_have_every_string_the_page_uses(page: str) -> None:
    en, zh = catalog(page, "en"), catalog(page, "zh")
    assert en == zh, {"only en": sorted(en - zh), "only zh": sorted(zh - en)}
    used = set(MARKUP.findall((WEB / PAGES[page]).read_text()))
    for path in modules(page):
        used |= {next(g for g in groups if g) for groups in LOOKUP.findall(path.read_text())}
    assert used - en == set(), f"{page}: keys looked up but not in its catalog: {sorted(used - en)}"


def test_pages_have_no_inline_script_or_style() -> None:
    """No inline script or style, no style attribute written by script, no third-party origin."""
    for html in WEB.glob("*.html"):
        text = html.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), html.name
        assert "<style" not in text and not re.search(r"\sstyle\s*=", text), html.name
        assert not re.search(r"""(?:src|href)=["']https?://""", text), html.name  # no third party
    for js in [*WEB.glob("**/*.js"), ROOT / "client_sdk" / "js" / "souk.js"]:
        text = js.read_text()
        assert not re.search(r"""setAttribute\(\s*["']style""", text), js.name
        assert not re.search(r"""style\s*=\s*["']""", text), js.name
        assert "innerHTML" not in text and "eval(" not in text and "new Function" not in text, js.name
