# syntax=docker/dockerfile:1
# busway: one image for the gateway and both handler services.
#   docker build -t busway .
#   docker run busway                                  # the gateway (python -m gateway)
#   docker run busway python -m handlers.users serve   # a handler service
#   docker run busway busway migrate                   # apply both services' migrations

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: resolve the locked dependencies into /app/.venv with uv --------------------
FROM ${PYTHON_IMAGE} AS builder

ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# Compile bytecode once here; copy files (no hard links into the cache); use the image's Python.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=0 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-project

# Then the project itself, installed as a wheel (not editable) so the venv stands alone.
COPY README.md ./
COPY bus ./bus
COPY db ./db
COPY gateway ./gateway
COPY handlers ./handlers
COPY schemas ./schemas
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---- runtime: the venv and the source, no build tools, not root --------------------------
FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system --gid 10001 busway \
    && useradd --system --uid 10001 --gid busway --home-dir /app --no-create-home --shell /usr/sbin/nologin busway

WORKDIR /app

# Owned by root, so the service cannot change its own code; only var/ (SQLite files and
# generated keys when run with development defaults) is writable by busway.
COPY --from=builder /app/.venv /app/.venv
COPY bus ./bus
COPY db ./db
COPY gateway ./gateway
COPY handlers ./handlers
COPY schemas ./schemas
RUN python -m compileall -q bus db gateway handlers schemas \
    && mkdir -p /app/var && chown busway:busway /app/var

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000

# busway (numeric, so Kubernetes runAsNonRoot can verify it)
USER 10001:10001

EXPOSE 8000

# No image HEALTHCHECK: the image runs three roles. compose.yml gives the gateway an HTTP
# check on /health and each handler service a check of its heartbeat key in Redis.
CMD ["python", "-m", "gateway"]
