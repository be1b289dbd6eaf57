"""What may import what (docs/architecture.md, "Import rules"), checked on the source.

Dependencies point inward: the outside clients (the SDK, the load tests) and the media relay
know nothing of the server; the features do not import each other (they meet in
server/reactions.py through domain events); op handlers and features never see the App. The
domain's own rule (only itself and the wire contract's codes) is tests/unit/test_domain_purity.py.
Imports under `if TYPE_CHECKING:` count too: a type is a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    package = _module(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names)  # `from server import app`
    return found


def _files(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in files:
        for name in sorted(_imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)} imports {name}")
    return out


def test_the_files_are_found() -> None:
    assert len(_files("server")) > 80 and _files("media") and _files("client_sdk") and _files("loadtest")


@pytest.mark.parametrize("package", ["client_sdk", "loadtest", "media"])
def test_outside_clients_and_the_media_relay_import_nothing_of_the_server(package: str) -> None:
    assert _violations(_files(package), ("server",)) == []


def test_the_sdk_does_not_import_the_load_tests() -> None:
    assert _violations(_files("client_sdk"), ("loadtest",)) == []


FEATURES = {
    "commerce": (["server/commerce"], ("server.community", "server.engagement", "server.insights")),
    "community": (["server/community"], ("server.commerce", "server.engagement", "server.insights")),
    "engagement": (["server/engagement"], ("server.commerce", "server.community", "server.insights")),
    "insights": (["server/insights"], ("server.commerce", "server.community", "server.engagement")),
}


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_features_do_not_import_each_other(feature: str) -> None:
    places, forbidden = FEATURES[feature]
    files = [p for place in places for p in ([ROOT / place] if place.endswith(".py") else _files(place))]
    assert _violations(files, forbidden) == [], "react to a domain event instead (server/reactions.py)"


def test_only_the_edges_of_the_process_know_the_app() -> None:
    """The App is the composition root: the CLI and workers start it, the connection layer
    (listener, gateway, HTTP) holds it; op handlers get `Services`, features get what they
    need."""
    allowed = {"server/app.py", "server/cli.py", "server/workers.py", "server/gateway.py",
               "server/http.py", "server/listener.py"}
    files = [p for p in _files("server") if str(p.relative_to(ROOT)) not in allowed]
    assert _violations(files, ("server.app",)) == []


def test_only_the_composition_root_chooses_the_cluster_parts() -> None:
    """The parts that exist only with several nodes (server/cluster/) are built by the App
    (channels take the presence it built) and the notices' Redis side by `open_stores`; a
    feature sees only the `Sync` protocol it is handed."""
    builders = {"server/app.py", "server/channels.py", "server/store/stores.py"}
    files = [p for p in _files("server") if str(p.relative_to(ROOT)) not in builders
             and not str(p.relative_to(ROOT)).startswith("server/cluster/")]
    forbidden = ("server.cluster.presence", "server.cluster.replica", "server.cluster.cascade",
                 "server.cluster.notices.ClusterSync")
    assert _violations(files, forbidden) == []


def test_the_domain_imports_no_adapter() -> None:
    adapters = ("server.commerce", "server.community", "server.engagement", "server.insights",
                "server.store", "server.bus", "server.ops", "server.app", "media", "asyncio")
    assert _violations(_files("server/domain"), adapters) == []


def test_the_finder_sees_relative_and_nested_imports(tmp_path: Path) -> None:
    sample = ROOT / "server" / "commerce" / "sales.py"  # a real file, read only
    assert "server.commerce.plumbing" in _imports(sample)
    assert "server.domain.events.SaleWentLive" in _imports(sample)
