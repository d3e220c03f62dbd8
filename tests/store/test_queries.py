"""The PostgreSQL store's named statements: whole texts that must not drift apart."""

from __future__ import annotations

from app.store.queries import load


def _body(statement: str) -> str:
    """The statement from its first CTE on, without its leading comments."""
    return statement[statement.index("WITH ") :]


def test_the_two_sends_differ_only_by_the_pushers_they_mark() -> None:
    inbox = load("inbox.sql")
    plain = _body(inbox["send_message"])
    marking = _body(inbox["send_message_marking_pushers"])
    start = marking.index("), marked AS (")
    end = marking.index(")\nSELECT id, sender_version")
    assert marking[:start] + marking[end:] == plain


def test_the_lock_rule_is_one_text() -> None:
    """lock_users is the rule; bump_versions begins with it, word for word."""
    inbox = load("inbox.sql")
    rule = inbox["lock_users"].strip()
    assert rule in inbox["bump_versions"].replace("\n    ", "\n")
