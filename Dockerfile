# The CallPanion push worker: `callpanion worker` (README, "Running the worker in a container").
#
#   docker build -t callpanion-worker .
#   docker run --env-file worker.env -p 127.0.0.1:9108:9108 callpanion-worker
#
# No secret is baked in: the database URL, the FCM service account and the APNs key come at run
# time (environment variables, read-only mounted files or secrets). The SQL migrations are in
# the image, at /app/supabase/migrations, only so that the same image can run a one-off
# `callpanion migrate` job (`--entrypoint callpanion ... migrate`); the worker never reads them.
#
# Both stages use the same base image: the virtualenv's interpreter is a link to it.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
WORKDIR /src
# pyproject.toml names README.md as the long description: the build needs it.
COPY pyproject.toml README.md ./
COPY python_worker/ python_worker/
# A wheel, then the wheel and its dependencies into the virtualenv (no editable install, no
# sources left behind). The compiled dependencies (psycopg-binary, cryptography, pydantic-core,
# websockets) come as manylinux wheels: neither stage needs a compiler.
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/*.whl


FROM python:3.11-slim-bookworm AS runtime

# A fixed, unprivileged uid/gid, so mounted credential files can be made readable to it alone.
RUN groupadd --system --gid 10001 callpanion \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin callpanion

COPY --from=builder /opt/venv /opt/venv
COPY supabase/migrations/ /app/supabase/migrations/

# CALLPANION_PROJECT_DIR: where `callpanion migrate` finds supabase/migrations.
# CALLPANION_WORKER_HTTP_HOST: /healthz and /metrics must be reachable from outside.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CALLPANION_PROJECT_DIR=/app \
    CALLPANION_WORKER_HTTP_HOST=0.0.0.0 \
    CALLPANION_WORKER_HTTP_PORT=9108

WORKDIR /app
USER 10001:10001

EXPOSE 9108
# The worker stops claiming on SIGTERM, finishes its sends within CALLPANION_SHUTDOWN_GRACE_SECS
# and gives back what it did not send: give `docker stop` a --stop-timeout above that grace.
STOPSIGNAL SIGTERM
# /healthz is 503 until the worker has reached the database once, and while it stops.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["callpanion", "healthcheck"]

ENTRYPOINT ["callpanion", "worker"]
