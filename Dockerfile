# msgsync: a small image with the locked dependencies, run as an unprivileged user.
FROM python:3.12-slim
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first, in their own cached layer: they change less often than the code.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-install-project --no-dev
COPY . /app
RUN --mount=type=cache,target=/root/.cache/uv uv sync --locked --no-dev \
    && mkdir -p /app/data && useradd --system --home /app msgsync && chown -R msgsync /app
USER msgsync
ENV PATH="/app/.venv/bin:$PATH" MSGSYNC_DATABASE_URL=sqlite:////app/data/msgsync.db
EXPOSE 8000
CMD ["msgsync", "serve", "--host", "0.0.0.0", "--port", "8000"]
