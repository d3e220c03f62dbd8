# syntax=docker/dockerfile:1
# msgsync: the locked dependencies and the installed package in a venv, run as a fixed
# unprivileged UID, data on a volume. tests/test_docker.py runs this file's build steps.
ARG PYTHON_VERSION=3.11
# The uv that writes uv.lock here: an older one may not read the lock's format.
ARG UV_VERSION=0.13
FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---- build: resolve nothing, install exactly uv.lock, then the project (not editable) ----
FROM python:${PYTHON_VERSION}-slim AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first, in their own cached layer: they change less often than the code.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-dev --no-install-project
COPY pyproject.toml uv.lock README.md ./
COPY app ./app
COPY alembic ./alembic
# Not editable: the package (migrations included) is copied into the venv, so the final
# image needs nothing of the sources.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable

# ---- run: the venv only, owned by root and read-only to the service ----
FROM python:${PYTHON_VERSION}-slim
# A fixed numeric UID/GID: `USER` by number lets Kubernetes' runAsNonRoot check it, and the
# owner of files on the volume stays the same across images.
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" msgsync \
    && useradd --system --uid "${APP_UID}" --gid "${APP_UID}" --no-create-home \
        --home-dir /data --shell /usr/sbin/nologin msgsync \
    && install -d -o "${APP_UID}" -g "${APP_UID}" -m 0750 /data
# Created owned by root: the service can write only /data, and no `chown -R` copies the
# venv into a second layer.
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:${PATH}" PYTHONUNBUFFERED=1 \
    MSGSYNC_DATABASE_URL=sqlite:////data/msgsync.db
# The embedded SQLite database (and its -wal/-shm files) live here; with PostgreSQL
# (MSGSYNC_DATABASE_URL=postgresql://...) nothing is written to it.
VOLUME ["/data"]
WORKDIR /data
USER ${APP_UID}:${APP_UID}
EXPOSE 8000
# The slim image has no curl: Python's urllib, which raises (exit 1) on refusal or any
# status of 400 and above.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
CMD ["msgsync", "serve", "--host", "0.0.0.0", "--port", "8000"]
