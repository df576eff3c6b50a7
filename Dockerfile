# Seedance Gateway: a small, non-root image. Build: docker build -t seedance-gateway .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project

COPY alembic.ini ./
COPY migrations ./migrations
COPY app ./app
RUN uv sync --frozen --no-dev

RUN useradd --system --uid 10001 --home /data gateway && mkdir -p /data && chown gateway /data
USER 10001
ENV PATH=/app/.venv/bin:$PATH \
    GATEWAY_DATABASE_URL=sqlite+aiosqlite:////data/gateway.db \
    GATEWAY_LOG_FORMAT=json

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
# Migrate, then serve. In Kubernetes the migration runs once as a Job (deploy/k8s/migrate-job.yaml).
CMD ["sh", "-c", "seedance-gateway migrate && exec seedance-gateway serve --host 0.0.0.0 --port 8000"]
