"""msgsync: offline-message sync for a messenger, one-to-one conversations and groups."""
