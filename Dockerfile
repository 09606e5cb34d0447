# conduit-api production image. Two stages: the builder resolves every dependency into a venv
# from the pinned requirements-production.txt (wheels only, so no compiler is needed), then
# installs the project itself without dependencies; the runtime copies only that venv plus the
# Alembic files, and runs as a fixed non-root UID/GID (10001) that the Kubernetes manifests and
# the Compose volumes rely on.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock file changes. The build host's
# pip settings (a private index, a proxy's CA bundle) arrive as BuildKit secrets: mounted for
# this one step, never written to a layer (deploy.sh passes PIP_CONFIG_FILE and PIP_CERT).
COPY requirements-production.txt ./
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    pip install --no-cache-dir --only-binary=:all: -r requirements-production.txt
COPY pyproject.toml README.md ./
COPY app ./app
# Bytecode stays: the runtime's root file system is read-only, so it could not be written later.
# The build backend (setuptools) comes from the index too, hence the same secrets.
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    pip install --no-cache-dir --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="conduit-api" \
      org.opencontainers.image.description="RealWorld (Conduit) API, FastAPI + Postgres + Redis"
# Settings the container topology fixes; everything else comes from the environment (.env).
# Uvicorn reads WEB_CONCURRENCY and FORWARDED_ALLOW_IPS itself, and every other option from
# UVICORN_<OPTION> (click's auto_envvar_prefix): UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN bounds the
# drain after SIGTERM (keep it >= SHUTDOWN_GRACE_SECONDS); UVICORN_TIMEOUT_KEEP_ALIVE outlasts
# the router's idle upstream connections (keepalive_timeout 60s, deploy/nginx/router.conf): the
# proxy closes an idle connection, never the app, which could close one just as the router sends
# a POST on it (a POST is never retried). glibc malloc: at most 2 arenas, and
# blocks of 1 MiB and more (Argon2id's 19 MiB) always mmapped, so they go back to the kernel when
# freed instead of staying in a thread's arena (docs/performance.md, "Third pass").
ENV PATH=/opt/venv/bin:$PATH \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=1048576 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    LOG_FORMAT=json \
    WEB_CONCURRENCY=2 \
    FORWARDED_ALLOW_IPS=127.0.0.1 \
    UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN=20 \
    UVICORN_TIMEOUT_KEEP_ALIVE=75 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    UPLOAD_DIR=/var/lib/conduit/uploads
# The directories exist in the image, owned by the app user, so a new named volume mounted on
# the uploads directory inherits that ownership; mount a tmpfs/emptyDir on /tmp/prometheus so
# the multiprocess metric files start empty with every container.
RUN groupadd --system --gid 10001 conduit \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
       --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin conduit \
    && mkdir -p /tmp/prometheus /var/lib/conduit/uploads \
    && chown 10001:10001 /tmp/prometheus /var/lib/conduit/uploads
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini ./
COPY alembic ./alembic
COPY deploy/uvicorn-log-config.json ./deploy/uvicorn-log-config.json
USER 10001:10001
EXPOSE 8000
# Uvicorn drains on SIGTERM (the app first answers readiness 503 for SHUTDOWN_DRAIN_SECONDS).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/liveness', timeout=2)"]
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--no-access-log", "--log-config", "deploy/uvicorn-log-config.json"]
