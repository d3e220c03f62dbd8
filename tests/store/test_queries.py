"""The PostgreSQL store's named statements: whole texts that must not drift apart."""

from __future__ import annotations

from app.store.queries import load


def test_the_lock_rule_is_one_text() -> None:
    """lock_users is the rule; bump_versions begins with it, word for word."""
    inbox = load("inbox.sql")
    rule = inbox["lock_users"].strip()
    assert rule in inbox["bump_versions"].replace("\n    ", "\n")
