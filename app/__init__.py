"""msgsync: offline-message sync for a one-to-one messenger."""
