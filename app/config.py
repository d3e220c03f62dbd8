"""Settings, read from the environment (prefix MSGSYNC_) and an optional .env file."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MSGSYNC_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./msgsync.db"
    db_pool_size: int = Field(default=20, ge=1, le=200)
    db_max_overflow: int = Field(default=0, ge=0, le=200)
    db_pool_prewarm: bool = True

    max_body_bytes: int = Field(default=16 * 1024, ge=1)
    max_request_bytes: int = Field(default=64 * 1024, ge=1024)
    sync_default_limit: int = Field(default=100, ge=1)
    sync_max_limit: int = Field(default=1000, ge=1)
    history_max_limit: int = Field(default=200, ge=1)
    max_timeout: float = Field(default=60.0, ge=0, le=3600)
    recall_window_seconds: int = Field(default=24 * 3600, ge=0)

    notify_interval_ms: float = Field(default=5.0, ge=0, le=1000)
    notify_channel: str = Field(default="msgsync", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    ack_batch_max: int = Field(default=500, ge=1)

    retention_max_age_seconds: int = Field(default=7 * 24 * 3600, ge=0)
    retention_max_entries: int = Field(default=1000, ge=0)
    retention_batch_users: int = Field(default=200, ge=1)
    retention_batch_entries: int = Field(default=10_000, ge=1)

    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=64 * 1024, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)

    gzip_min_bytes: int = Field(default=1024, ge=0)
    cors_origins: str = ""
    log_format: Literal["text", "json"] = "text"

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        """Accept the plain URL forms operators write and pick the async driver for them."""
        for plain, driver in (
            ("postgresql://", "postgresql+psycopg://"),
            ("postgres://", "postgresql+psycopg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        if not url.startswith(("postgresql+psycopg://", "sqlite+aiosqlite://")):
            raise ValueError("database_url must be a postgresql:// or sqlite:// URL")
        return url

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

    @property
    def cors_origin_list(self) -> list[str]:
        """MSGSYNC_CORS_ORIGINS, comma-separated; empty means CORS is off."""
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
