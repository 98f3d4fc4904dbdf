"""The store's migration list: each version once (two helpers' hunks once listed 13 twice, and a
fresh store then failed to open with "table already exists")."""

from __future__ import annotations

from agent.store import MIGRATIONS


def test_each_migration_version_is_listed_once() -> None:
    versions = [v for v, _ in MIGRATIONS]
    assert len(versions) == len(set(versions)), sorted(v for v in versions if versions.count(v) > 1)
    assert set(versions) == set(range(1, max(versions) + 1))  # no gaps: a number is never skipped


def test_a_fresh_store_migrates_to_the_last_version(fast_store) -> None:
    assert fast_store.schema_version == max(v for v, _ in MIGRATIONS)
