"""The commerce domain stays sans-I/O, and its refusal codes are the protocol's."""

from __future__ import annotations

import ast
from pathlib import Path

from client_sdk.protocol import Code
from server.domain import codes

DOMAIN = Path(__file__).resolve().parents[2] / "server" / "domain"
COMMERCE_MODULES = ["catalog", "codes", "fields", "flashsale", "order", "teambuy", "throttle"]
FORBIDDEN = {"asyncio", "socket", "time", "sqlite3", "threading", "selectors", "datetime"}


def test_domain_codes_equal_protocol_codes() -> None:
    names = [n for n in vars(codes) if n.isupper()]
    assert names
    for name in names:
        assert getattr(Code, name) == getattr(codes, name), name


def test_commerce_domain_imports_nothing_with_io() -> None:
    for name in COMMERCE_MODULES:
        tree = ast.parse((DOMAIN / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                assert top not in FORBIDDEN, f"{name} imports {mod}"
                if top in {"server", "client_sdk", "media", "loadtest"}:
                    assert mod.startswith("server.domain") or mod == "server.errors", (
                        f"{name} imports {mod}"
                    )
