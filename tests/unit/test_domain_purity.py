"""The domain stays sans-I/O: every module of `server/domain/` is checked, none is skipped.

The rules must run the same in the embedded server, a cluster node and a unit test, in
microseconds: so they import nothing that waits, reads a clock, touches storage or a socket,
and nothing of the project but the domain itself and the wire contract's codes
(`client_sdk.protocol.Code`, the contract both the SDK and the server speak). The allowed
imports are a list, not a deny-list: a new kind of import has to be added here, on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from client_sdk.protocol import Code

DOMAIN = Path(__file__).resolve().parents[2] / "server" / "domain"
MODULES = sorted(p.stem for p in DOMAIN.glob("*.py"))

# The standard library the rules may use: data structures, text and calendar arithmetic.
ALLOWED_STDLIB = {
    "__future__", "typing", "collections", "dataclasses", "enum", "re", "unicodedata",
    "datetime", "math", "itertools", "functools", "abc", "hashlib", "hmac", "bisect", "heapq",
}
# What a domain module may take from the wire contract: the codes, nothing else.
ALLOWED_FROM_CONTRACT = {"Code"}
# Reading a clock is I/O whatever module it comes from (datetime is allowed for calendar
# arithmetic on a time the caller passes in).
CLOCK_CALLS = {"now", "today", "utcnow", "time", "monotonic", "perf_counter", "time_ns"}


def _imports(tree: ast.AST) -> list[tuple[str, list[str], int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.append((module, [a.name for a in node.names], node.lineno))
    return found


def test_every_domain_module_is_covered() -> None:
    assert len(MODULES) >= 19, MODULES  # a glob that found nothing would pass everything


@pytest.mark.parametrize("name", MODULES)
def test_domain_module_imports_nothing_with_io(name: str) -> None:
    tree = ast.parse((DOMAIN / f"{name}.py").read_text())
    for module, names, line in _imports(tree):
        top = module.split(".")[0]
        where = f"server/domain/{name}.py:{line} imports {module}"
        if module.startswith("server."):
            assert module.startswith("server.domain"), where
        elif module == "server":
            pytest.fail(where)
        elif top == "client_sdk":
            assert module == "client_sdk.protocol" and set(names) <= ALLOWED_FROM_CONTRACT, (
                f"{where} {names}: only the codes of the wire contract")
        else:
            assert top in ALLOWED_STDLIB, where


@pytest.mark.parametrize("name", MODULES)
def test_domain_module_reads_no_clock(name: str) -> None:
    tree = ast.parse((DOMAIN / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            owner = target.id if isinstance(target, ast.Name) else ""
            assert not (node.func.attr in CLOCK_CALLS and owner in {"datetime", "date", "time"}), (
                f"server/domain/{name}.py:{node.lineno} reads a clock: take the time as an argument")


@pytest.mark.parametrize("name", MODULES)
def test_domain_refusals_use_the_protocol_codes(name: str) -> None:
    """`SoukError(Code.X, ...)`, never a bare string that could drift from the contract."""
    tree = ast.parse((DOMAIN / f"{name}.py").read_text())
    codes = {v for k, v in vars(Code).items() if k.isupper()}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "SoukError":
            first = node.args[0] if node.args else None
            assert not isinstance(first, ast.Constant), (
                f"server/domain/{name}.py:{node.lineno}: SoukError({first.value!r}) — use Code")
            assert isinstance(first, ast.Attribute) and isinstance(first.value, ast.Name) \
                and first.value.id == "Code" and getattr(Code, first.attr, None) in codes, (
                f"server/domain/{name}.py:{node.lineno}: the code must be a Code attribute")
