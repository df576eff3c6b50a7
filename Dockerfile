# Seedance Gateway: a small, non-root image with the locked dependencies and no build tools.
# Build: docker build -t seedance-gateway:0.1.0 .
ARG PYTHON=python:3.11.11-slim-bookworm

# Build stage: uv resolves nothing here; it installs exactly what uv.lock says into /app/.venv.
FROM ${PYTHON} AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY alembic.ini ./
COPY migrations ./migrations
COPY app ./app
RUN uv sync --frozen --no-dev

# Final stage: the interpreter, the virtual environment and the code (installed editable at
# /app, as in the build stage); no uv, no compiler.
FROM ${PYTHON}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/app/.venv/bin:$PATH \
    GATEWAY_DATABASE_URL=sqlite+aiosqlite:////data/gateway.db \
    GATEWAY_LOG_FORMAT=json
RUN useradd --system --uid 10001 --user-group --home /data gateway \
    && mkdir -p /data && chown gateway:gateway /data
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/alembic.ini /app/alembic.ini
COPY --from=build /app/migrations /app/migrations
COPY --from=build /app/app /app/app
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"]
# Migrate, then serve. Kubernetes and compose run the migration once, as its own step.
CMD ["sh", "-c", "seedance-gateway migrate && exec seedance-gateway serve --host 0.0.0.0 --port 8000"]
