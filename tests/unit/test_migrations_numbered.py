"""Migrations are numbered 1, 2, 3, ... once each: two branches that both add "migration 2"
must not merge into a schema whose second change never runs on databases that have a 2."""

from __future__ import annotations

from server.store.schema import MIGRATIONS


def test_migration_versions_are_consecutive_and_unique() -> None:
    versions = [m.version for m in MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1)), versions
    names = [m.name for m in MIGRATIONS]
    assert len(set(names)) == len(names), names
