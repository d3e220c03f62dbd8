"""Push: pushers and the cursors of what devices have synced (pushers), the worker that
notifies Matrix push gateways (worker) with its leases (leases), its HTTP client
(gateway_client), and the allowlist of gateway URLs (gateway_urls)."""
