"""Settings, read from the environment (prefix MSGSYNC_) and an optional .env file."""

from __future__ import annotations

import math
import re
from typing import Any, Literal
from urllib.parse import quote

import sqlalchemy.exc
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

from app.push.gateway_urls import parse_allowlist

__all__ = ["Settings", "driver_arguments"]

# The schemes operators write, and the async driver each one means: the URL is read here,
# when Settings are checked; which database it names is decided by app.store.
_SCHEMES = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MSGSYNC_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./msgsync.db"
    # A direct session (LISTEN/NOTIFY, the retention lock) when database_url is a pooler.
    database_session_url: str = ""
    # "auto": off when statements go through a pooler (a session URL of its own is set);
    # psycopg's server-side prepared statements do not survive transaction pooling.
    db_prepared_statements: Literal["auto", "on", "off"] = "auto"
    # Streaming replicas for sync pages, history and conversation lists (comma-separated).
    database_replica_urls: str = ""
    replica_max_lag_seconds: float = Field(default=5.0, ge=0)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=0, ge=0, le=200)
    db_pool_prewarm: bool = True
    # The longest a request waits for a pooled connection or for a connection attempt
    # before it is answered 503 database_unavailable: during an outage or a failover
    # clients get a fast answer to retry on, not a hang (libpq allows a connection attempt
    # at least 2 s).
    database_wait_seconds: float = Field(default=2.0, gt=0, le=600)

    max_body_bytes: int = Field(default=16 * 1024, ge=1)
    max_request_bytes: int = Field(default=64 * 1024, ge=1024)
    sync_default_limit: int = Field(default=100, ge=1)
    sync_max_limit: int = Field(default=1000, ge=1)
    history_max_limit: int = Field(default=200, ge=1)
    max_timeout: float = Field(default=60.0, ge=0, le=3600)
    recall_window_seconds: int = Field(default=24 * 3600, ge=0)
    # Groups up to this many members get every event written into each member's offline
    # store (write fan-out); above it, up to group_max_members, an event is written once to
    # the group's log and members get coalesced group_news entries (large groups).
    group_fanout_limit: int = Field(default=200, ge=1, le=100_000)
    group_max_members: int = Field(default=100_000, ge=1)

    notify_interval_ms: float = Field(default=5.0, ge=0, le=1000)
    notify_channel: str = Field(default="msgsync", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    ack_batch_max: int = Field(default=500, ge=1)

    retention_max_age_seconds: int = Field(default=7 * 24 * 3600, ge=0)
    retention_max_entries: int = Field(default=1000, ge=0)
    retention_batch_users: int = Field(default=200, ge=1)
    retention_batch_entries: int = Field(default=10_000, ge=1)

    # A device unused for this many days stops working (401) and the retention job removes
    # it; 0 keeps devices forever. Whole days: the token cache and the last_seen_at refresh
    # work at the scale of a minute, far below the shortest expiry.
    device_idle_days: int = Field(default=90, ge=0, le=36500)
    # Push (docs/push.md): gateway URL prefixes pushers may use (comma-separated; empty
    # disables push), how long an entry may stay unsynced before its device is pushed, and
    # how long a failing push is retried before it is dropped.
    push_gateways: str = ""
    push_delay_seconds: float = Field(default=5.0, gt=0, le=3600)
    push_max_age_seconds: float = Field(default=3600.0, gt=0)
    push_concurrency: int = Field(default=16, ge=1, le=10_000)
    # Pushers are bounded (docs/abuse.md): each is one gateway request per push and one entry
    # of GET /pushers. Past either cap, POST /pushers is 409 too_many_pushers (replacing the
    # same app_id and pushkey does not count).
    max_pushers_per_device: int = Field(default=5, ge=1, le=1000)
    max_pushers_per_user: int = Field(default=50, ge=1, le=10_000)

    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=64 * 1024, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)
    password_hash_concurrency: int = Field(default=1, ge=1)
    password_hash_queue: int = Field(default=32, ge=0)

    login_attempts_per_account: int = Field(default=10, ge=0)
    login_attempts_per_address: int = Field(default=100, ge=0)
    registrations_per_address: int = Field(default=20, ge=0)
    throttle_window_seconds: int = Field(default=900, ge=1)
    # Owner lock-out (docs/abuse.md): a password re-entered by a signed-in device (DELETE
    # /devices/{id}, POST /password) counts against that device only, never against the
    # account's logins or its other devices; this many free attempts, then growing delays.
    password_attempts_per_device: int = Field(default=5, ge=0)
    forwarded_allow_ips: str = "127.0.0.1"

    header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    body_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)

    # The HTTP edge (docs/abuse.md): a request head (request line and header fields) of at
    # most this many bytes and fields, else 431 request_head_too_large; sends per user per
    # second with a burst (0: no limit), per process; long-polls waiting at once per device,
    # per process (0: no bound); the bearer token /metrics asks for (empty: public).
    max_head_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_header_fields: int = Field(default=100, ge=8, le=10_000)
    send_rate: float = Field(default=10.0, ge=0)
    send_burst: int = Field(default=100, ge=1)
    longpolls_per_device: int = Field(default=10, ge=0)
    metrics_token: str = ""

    gzip_min_bytes: int = Field(default=1024, ge=0)
    cors_origins: str = ""
    log_format: Literal["text", "json"] = "text"
    opentelemetry: bool = False

    @field_validator("database_url", "database_session_url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        """Accept the URL forms operators write and pick the async driver for them; the
        primary's connections go to whichever listed host is writable."""
        return database_url(url, primary=True) if url else url  # unset session URL: none

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: str) -> str:
        """An origin is a scheme and a host (and port): a browser's Origin header never has
        a path or a trailing slash, so such an entry would silently match nothing."""
        for origin in (o.strip() for o in origins.split(",")):
            if origin and origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(
                    f"{origin!r} is not an origin like https://app.example.com (no path, "
                    "no trailing slash) or *"
                )
        return origins

    @field_validator("push_gateways")
    @classmethod
    def _gateways(cls, entries: str) -> str:
        """Checked at start-up: a malformed entry would otherwise silently allow nothing, or
        more than meant (app.push.gateway_urls)."""
        parse_allowlist(entries)
        return entries

    @property
    def cors_origin_list(self) -> list[str]:
        """MSGSYNC_CORS_ORIGINS, comma-separated; empty means CORS is off."""
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def push_gateway_prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.push_gateways.split(",") if p.strip())

    @field_validator("database_replica_urls")
    @classmethod
    def _replica_drivers(cls, urls: str) -> str:
        return "\n".join(database_url(u, primary=False) for u in _split_urls(urls))

    @property
    def replica_urls(self) -> list[str]:
        return [u for u in self.database_replica_urls.split("\n") if u]

    @property
    def database_connect_timeout(self) -> int:
        """libpq's connect_timeout for MSGSYNC_DATABASE_WAIT_SECONDS, per host tried: whole
        seconds, at least 2 (libpq raises anything lower to 2)."""
        return max(2, math.ceil(self.database_wait_seconds))

    @property
    def session_url(self) -> str:
        """Where LISTEN/NOTIFY and session-scoped locks go: a direct server session."""
        return self.database_session_url or self.database_url

    @property
    def prepared_statements(self) -> bool:
        """Whether psycopg may prepare statements server-side on database_url's connections.

        A pooler in transaction mode (PgBouncer before 1.21) hands each transaction to any
        server connection: a statement prepared on one is missing on the next ("prepared
        statement does not exist") or, worse, another client's is run with our parameters.
        """
        if self.db_prepared_statements != "auto":
            return self.db_prepared_statements == "on"
        # A URL of its own for sessions says database_url is a pooler; so does PgBouncer's
        # customary port.
        ports = str(driver_arguments(self.database_url).get("port", "")).split(",")
        return self.session_url == self.database_url and "6432" not in ports


def _split_urls(urls: str) -> list[str]:
    """MSGSYNC_DATABASE_REPLICA_URLS: comma-separated, where a URL may list several hosts
    with commas itself (h1:p1,h2:p2 or host=h1,h2): a new URL starts only at a scheme."""
    parts = re.split(r",\s*(?=[a-z][a-z0-9+]*://)", urls.strip())
    return [part.strip() for part in parts if part.strip()]


def database_url(url: str, primary: bool) -> str:
    """One canonical SQLAlchemy URL for any form an operator may write.

    libpq takes several hosts, tried in turn, in three spellings: in the address
    (`postgres://h1:p1,h2:p2/db`, what `pg_autoctl show uri` prints), as `?host=h1,h2&port=
    p1,p2`, and SQLAlchemy's `?host=h1:p1&host=h2:p2`. SQLAlchemy parses the last two only;
    the first becomes the last here. The primary's connections (statements, LISTEN) ask
    for `target_session_attrs=read-write` when several hosts are listed, so that they land
    on the one that accepts writes and, after a failover, on the new one. Anything libpq
    would not understand is refused now, in one line, rather than at the first connection.
    """
    scheme, sep, rest = url.strip().partition("://")
    driver = _SCHEMES.get(scheme.lower()) if sep else None
    if driver is None:
        raise ValueError("must be a postgresql://, postgres:// or sqlite:// URL")
    if driver.startswith("sqlite"):
        return f"{driver}://{rest}"
    try:
        parsed = make_url(f"{driver}://{_hosts_to_query(rest)}")
        hosts = str(driver_arguments(parsed).get("host", "")).split(",")
        if primary and len(hosts) > 1 and "target_session_attrs" not in parsed.query:
            parsed = parsed.update_query_dict({"target_session_attrs": "read-write"})
    except (ValueError, sqlalchemy.exc.ArgumentError) as exc:
        raise ValueError(f"not a usable PostgreSQL URL: {exc}") from None
    return parsed.render_as_string(hide_password=False)


def _hosts_to_query(rest: str) -> str:
    """`user@h1:p1,h2:p2/db?x=y` (everything after the scheme) as `user@/db?x=y&host=h1:p1&
    host=h2:p2`; a single host is left where it is."""
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if "," not in hosts:
        return rest
    path, _, query = tail.partition("?")
    if re.search(r"(^|&)(host|port)=", query):
        raise ValueError("hosts both in the address and in host= or port=")
    listed = []
    for host in hosts.split(","):
        name, colon, port = host.rpartition(":") if ":" in host else (host, "", "")
        if not name or (colon and not port.isdigit()):
            raise ValueError(f"{host!r} is not a host:port")
        listed.append("host=" + quote(host, safe=""))
    query = "&".join([*([query] if query else []), *listed])
    return f"{userinfo}{at}{path or '/'}?{query}"


def driver_arguments(url: str | URL) -> dict[str, Any]:
    """The libpq connection parameters of a PostgreSQL URL (host and port as libpq's
    comma-separated lists), for connections made without SQLAlchemy (LISTEN, the budget
    check, the retention lock): the same reading of the URL as the pools'."""
    parsed = make_url(url) if isinstance(url, str) else url
    _, params = parsed.get_dialect()().create_connect_args(parsed)
    for port in str(params.get("port", "")).split(","):
        if port and not port.isdigit():
            raise ValueError(f"port {port!r} is not a number")
    return dict(params)
