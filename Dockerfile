# syntax=docker/dockerfile:1
# The gateway's image: a builder stage makes a virtualenv with the gateway's wheel and its dependencies, the
# runtime stage copies that virtualenv onto a slim Python and runs it as a non-root user.
#
#   docker build -t llm-gateway .
#   docker run --rm -p 8080:8080 -e GATEWAY_KEY=sk-... -e OPENAI_API_KEY llm-gateway
#
# The config is /app/gateway.yaml (the repository's own; it reads GATEWAY_KEY, GATEWAY_ADMIN_KEY, OPENAI_API_KEY,
# OPENAI_BASE_URL, GATEWAY_PORT from the environment), with the files it names beside it: config/ and the example
# policies/. Mount another file and pass --config to change it (deploy/docker-compose.yml does). Telemetry goes to
# /app/gateway.db by default: mount a volume, or point telemetry.store elsewhere.
# tests/integration/test_deploy.py assembles this stage's /app from the COPY lines below and .dockerignore, and
# runs the CMD on it: a file the config names but the image lacks fails there.

ARG PYTHON_VERSION=3.11

# --- builder ----------------------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change, not with the code.
# Every dependency ships binary wheels for CPython 3.11 on amd64 and arm64, so no compiler is needed.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install --upgrade pip \
    && pip install -r requirements.txt

# Then the package itself, as a wheel (not editable): the runtime stage needs no source tree.
# README.m[d] matches README.md when it exists and nothing otherwise (pyproject.toml names it as the readme);
# pyproject.toml is named again so that the statement always has a match, which the classic builder demands.
COPY pyproject.toml README.m[d] ./
COPY gateway ./gateway
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip install --no-deps /wheels/*.whl \
    && gateway --version

# --- runtime ----------------------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="gateway" \
      org.opencontainers.image.description="A drop-in, OpenAI-compatible LLM gateway" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_PORT=8080

RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /app --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir -p /app /data \
    && chown gateway:gateway /app /data

# The same path as in the builder: the venv's scripts and its python symlink keep working.
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Config files belong to root and are read-only to the gateway; /app itself is writable for the SQLite default.
COPY gateway.yaml ./gateway.yaml
COPY config ./config
COPY policies ./policies

USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM

# Liveness only (the process answers); /health/ready says whether it can serve (README, Health).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('GATEWAY_PORT') or '8080'; r = urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=2); sys.exit(0 if r.status == 200 else 1)"]

CMD ["gateway", "serve", "--config", "/app/gateway.yaml", "--host", "0.0.0.0"]
