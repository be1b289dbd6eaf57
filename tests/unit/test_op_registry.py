"""The op registry declares, for every op and HTTP route, who may call it and what it acts on.

These declarations are what the gateway and the API guard enforce (the role) and what an
authorization matrix is derived from (the scope), so an op without one must not exist; and
no handler may decide by role on its own, or the registry would no longer tell the truth.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import server.api  # registers the HTTP routes
import server.ops  # noqa: F401  (registers every op)
from client_sdk.protocol import Role
from server.ops.registry import OPS, ROUTES, Scope, Target, matrix

ROOT = Path(__file__).resolve().parents[2]
ROLE_RULE_HOMES = {ROOT / "server" / "ops" / "registry.py"}


def test_the_tables_are_filled() -> None:
    assert len(OPS) >= 50, sorted(OPS)  # an import that registered nothing would pass below
    assert {"auth", "join", "chat", "buy", "coupon_issue", "publish"} <= set(OPS)
    assert {"rooms/*", "rooms/*/orders", "shop/metrics"} <= set(ROUTES)


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_declares_roles_and_scope(name: str) -> None:
    spec = OPS[name]
    assert spec.roles and spec.roles <= set(Role.ALL), spec.roles
    assert isinstance(spec.scope, tuple) and spec.scope, f"{name} declares no scope"
    for scope in spec.scope:
        assert isinstance(scope, Scope) and isinstance(scope.target, Target)
        if scope.target in (Target.ROOM, Target.GROUP, Target.CHANNEL):
            assert scope.field, f"{name}: a {scope.target} scope names its field"
    assert len(set(spec.scope)) == len(spec.scope), f"{name} declares a scope twice"


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_handler_takes_the_services_not_the_app(name: str) -> None:
    params = list(inspect.signature(OPS[name].handler).parameters.values())
    assert [p.annotation for p in params] == ["Services", "Session", "Frame"], (name, params)


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_every_route_declares_roles_scope_and_refusal(path: str) -> None:
    spec = ROUTES[path]
    assert spec.roles and spec.roles <= set(Role.ALL)
    assert spec.scope and all(isinstance(s, Scope) for s in spec.scope)
    assert spec.refusal


def test_scope_rejects_contradictions() -> None:
    with pytest.raises(ValueError):
        Scope(Target.ROOM)  # a room scope must say which field names the room
    with pytest.raises(ValueError):
        Scope(Target.USER, "user")  # the caller's own records are named by no field
    with pytest.raises(ValueError):
        Scope(Target.SHOP, via="post")


def test_matrix_walks_every_op_role_and_target() -> None:
    rows = matrix()
    assert {r.op for r in rows} == set(OPS)
    assert {r.role for r in rows} == set(Role.ALL)
    for r in rows:
        spec = OPS[r.op]
        assert r.role_allowed == (not spec.auth or r.role in spec.roles)
        assert (r.whose == "other") <= (r.target not in (Target.SESSION, Target.USER))
    buy = {(r.role, r.whose): r.role_allowed for r in rows if r.op == "buy"}
    assert buy[("viewer", "other")] and buy[("admin", "own")]
    create = {r.role: r.role_allowed for r in rows if r.op == "sale_create"}
    assert not create["viewer"] and not create["moderator"] and create["streamer"]


def _role_decisions(path: Path) -> list[str]:
    """Comparisons of a role, or uses of `is_staff`: decisions by role made in place."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr == "is_staff":
            found.append(f"{path.name}:{node.lineno} is_staff")
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                named_role = (isinstance(side, ast.Attribute) and side.attr == "role") or (
                    isinstance(side, ast.Subscript) and isinstance(side.slice, ast.Constant)
                    and side.slice.value == "role")
                if named_role:
                    found.append(f"{path.name}:{node.lineno} compares a role")
    return found


def test_role_rules_live_only_in_the_registry() -> None:
    places = [*sorted((ROOT / "server" / "ops").glob("*.py")), ROOT / "server" / "api.py"]
    decisions = [d for p in places if p not in ROLE_RULE_HOMES for d in _role_decisions(p)]
    assert decisions == [], "name a role set of server/ops/registry.py instead: " + ", ".join(decisions)


def test_role_check_finder_finds_one(tmp_path: Path) -> None:
    """The finder above can fail: it sees a comparison and `is_staff`."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f(ident, m):\n    return ident.role == 'admin' or ident.is_staff or m['role'] in ()\n")
    assert len(_role_decisions(sample)) == 3
