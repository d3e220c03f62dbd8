"""Group conversations: membership and its rules (members.py), messages, read cursors and
recall (messages.py), what a member reads (views.py); the database behind app.store.groups."""
