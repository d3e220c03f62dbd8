"""The inbox: sending, reading a page of changes, acks, recall and read receipts, history,
retention, and the send rate."""
