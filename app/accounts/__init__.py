"""Accounts: users, passwords, tokens and devices, and the throttle on guessing them."""
