"""The application factory and its lifespan: database, password hasher, notifier, acks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI
from starlette.types import ASGIApp

from app import edge, heap
from app.accounts.auth import Passwords, TokenCache
from app.api import (
    accounts,
    conversations,
    docs,
    groups,
    health,
    metrics,
    operations,
    pushers,
    users,
)
from app.api import sync as sync_api
from app.config import Settings
from app.inbox.acks import AckBatcher
from app.inbox.rates import RateLimit
from app.inbox.wait import LongPolls
from app.metrics import LATENCIES, Sampler
from app.notifier import Notifier, PgNotifier, close_on_signals
from app.openapi import TAGS, install_openapi
from app.problems import install_error_handlers
from app.push.pushers import SyncedCursors, push_interval
from app.push.worker import PushWorker
from app.store import backend_for, open_database, open_store
from app.web import install as install_web_client

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if backend_for(settings).migrates_at_start:
            # Imported here: Alembic (and Mako, Pygments under it) is for the databases
            # migrated at start, not for every process that serves PostgreSQL.
            from app.db.migrations import upgrade_to_head

            # The embedded default must run on a bare machine: create and migrate the file.
            await to_thread.run_sync(upgrade_to_head, settings.database_url)
        db = open_database(settings)
        # What the domain asks of the database, for this database, chosen once.
        app.state.store = open_store(db)
        if settings.db_pool_prewarm:
            await db.prewarm()
        await db.replicas.start()
        notifier = (
            Notifier()
            if db.serves_one_process
            else PgNotifier(
                # LISTEN needs a session of its own: a transaction pooler drops notifications.
                settings.session_url,
                settings.notify_channel,
                settings.notify_interval_ms / 1000,
                connect_timeout=settings.database_connect_timeout,
            )
        )
        if isinstance(notifier, PgNotifier):
            notifier.on_connection_lost = db.drop_pooled_connections
        tokens = TokenCache()
        notifier.tokens = tokens
        await notifier.start()
        acks = AckBatcher(db, settings.ack_batch_max)
        await acks.start()
        app.state.settings = settings
        app.state.db = db
        # One store per database, built once (another part of the lifespan may have).
        store = getattr(app.state, "store", None)
        if store is None or store.db is not db:
            app.state.store = open_store(db)
        app.state.passwords = Passwords(settings)
        app.state.notifier = notifier
        app.state.tokens = tokens
        app.state.acks = acks
        # Per process (docs/abuse.md); None when MSGSYNC_SEND_RATE is 0.
        app.state.send_rate = (
            RateLimit(settings.send_rate, settings.send_burst) if settings.send_rate else None
        )
        # Push: synced positions are recorded and the worker runs only when push is on.
        seen = SyncedCursors(db, interval=push_interval(settings.push_delay_seconds))
        pusher = PushWorker(db, settings, grace=seen.interval)
        if settings.push_gateway_prefixes:
            await seen.start()
            await pusher.start()
        app.state.seen = seen
        app.state.longpolls = LongPolls(db, notifier, tokens, seen, settings)
        app.state.metrics = Sampler(notifier, db)
        app.state.metrics.start()
        heap.settle()
        try:
            with close_on_signals(notifier):
                yield
        finally:
            await app.state.metrics.stop()
            # Queued acks and pushes are settled before the database goes away.
            await pusher.stop()
            await seen.stop()
            await acks.stop()
            await notifier.stop()
            await db.dispose()
            LATENCIES.write()

    app = _Msgsync(
        settings,
        title="msgsync",
        version="0.1.0",
        summary="Offline-message sync for a messenger: one-to-one conversations and groups",
        openapi_tags=TAGS,
        lifespan=lifespan,
        # Served by app.api.docs from packaged assets instead of a CDN.
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry spans and metrics, only when the operator asks: with
        # it on, every request asks OpenTelemetry whether a provider is configured (reading
        # the environment), a tenth of a plain ack's CPU even when none is.
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    docs.install(app)
    install_openapi(app, settings)
    install_web_client(app)
    app.include_router(accounts.router)
    app.include_router(users.router)
    app.include_router(sync_api.router)
    app.include_router(operations.router)
    app.include_router(conversations.router)
    app.include_router(groups.router)
    app.include_router(pushers.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    return app


class _Msgsync(FastAPI):
    """FastAPI with a layer outside all of its middleware, error handling included: plain
    sends, acks and syncs skip their per-request work, and a waiting long-poll holds none of
    its state (app.edge.hotpaths). It hands anything unusual to the whole application, which
    answers errors as it answers any other.

    The cross-cutting concerns (app.edge.frontdoor) wrap all of these, so that every answer
    crosses them, a last-resort 500 included (the front door also keeps any exception from
    reaching the server, which would close the connection): add a concern there, not with
    add_middleware, which would miss the answers of that layer. app.edge builds the
    layers and draws them."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = settings

    def build_middleware_stack(self) -> ASGIApp:
        return edge.around(super().build_middleware_stack(), self._settings)
