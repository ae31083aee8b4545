# firstparty's image: `docker build -t firstparty .` (docs/deployment.md).
# The same image runs every role; the command says which:
#   serve --host 0.0.0.0 (the default)   the HTTP API, on port 8000
#   worker                               a delivery worker (with FIRSTPARTY_REDIS_URL set)
#   migrate                              applies the schema, once per release, before the API rolls
# Checked by tests/ops/test_deployment_files.py: hadolint, and ENTRYPOINT + CMD and the
# HEALTHCHECK command run as plain processes against PostgreSQL and Redis.

# Build stage: firstparty's wheel, installed with its dependencies (wheels only: the slim image
# has no compiler) into a venv that the runtime stage copies.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/firstparty
COPY pyproject.toml README.md ./
COPY firstparty ./firstparty
RUN /opt/firstparty/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/firstparty/bin/pip install --no-cache-dir --only-binary=:all: /wheels/firstparty-*.whl \
    && /opt/firstparty/bin/pip uninstall --yes pip

# Runtime stage: the venv alone, run as an unprivileged user.
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 firstparty \
    && useradd --system --uid 10001 --gid firstparty --no-create-home \
       --home-dir /var/lib/firstparty --shell /usr/sbin/nologin firstparty \
    && install -d -o firstparty -g firstparty -m 0750 /var/lib/firstparty
COPY --from=build /opt/firstparty /opt/firstparty
ENV PATH=/opt/firstparty/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# The working directory is the embedded default's data directory (./firstparty.db); a server
# deployment sets FIRSTPARTY_DATABASE_URL and keeps nothing here.
WORKDIR /var/lib/firstparty
USER 10001:10001
EXPOSE 8000
# Ready when the database and the queue answer (/readyz); Python's own urllib, as the slim image
# has no curl. A worker or migrate container serves no HTTP: compose.yaml turns this off for them.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]
ENTRYPOINT ["firstparty"]
CMD ["serve", "--host", "0.0.0.0"]
