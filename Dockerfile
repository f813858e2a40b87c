# videobot with PostgreSQL support. Build: docker build -t videobot .
# Run one process with SQLite in a volume:  docker run --env-file .env -v videobot-data:/app/data videobot
# With PostgreSQL, a gateway and workers: compose.yaml. No setting or secret is baked in: they come from the
# environment when the container starts (--env-file, or env_file in compose.yaml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A dedicated user with no login shell; the installed code stays root-owned, so the bot cannot change it.
RUN useradd --system --user-group --uid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin videobot

# /videoadmin stats labels its chart in the admin's language: Chinese, Japanese and Korean need a font that has
# them (matplotlib's own has none; without one, those charts are labelled in English).
RUN apt-get update && apt-get install -y --no-install-recommends fonts-noto-cjk && rm -rf /var/lib/apt/lists/*

# Install from a copy that is then removed: the bot runs from site-packages, not from the build context.
# PyAV's wheel brings FFmpeg, asyncpg's the PostgreSQL driver: no compiler or system library is needed.
COPY pyproject.toml README.md /src/
COPY bot/ /src/bot/
COPY cogs/ /src/cogs/
RUN pip install "/src[postgres]" && rm -rf /src

WORKDIR /app
# The example ComfyUI workflows, for COMFYUI_WORKFLOW=workflows/ (mount your own over them).
COPY workflows/ workflows/
# DATA_DIR: staged images and clips, and the SQLite database when DATABASE_URL is left at its default. Made here
# and owned by the bot, so a fresh named volume mounted on it starts out writable for the bot.
RUN mkdir -p /app/data && chown videobot:videobot /app/data
VOLUME ["/app/data"]

# /metrics and /healthz (with METRICS_PORT set) must be reachable from outside the container.
ENV DATA_DIR=/app/data \
    METRICS_HOST=0.0.0.0

USER videobot

# Healthy when /healthz answers 200 (503 means the database is unreachable); without METRICS_PORT there is
# nothing to ask, so the check passes. Plain http.client: an HTTP_PROXY set for the providers is not used.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import http.client, os, sys; port = os.environ.get('METRICS_PORT', ''); host = os.environ.get('METRICS_HOST', ''); host = '127.0.0.1' if host in ('', '0.0.0.0', '::') else host; conn = http.client.HTTPConnection(host, int(port), timeout=4) if port else None; conn and conn.request('GET', '/healthz'); sys.exit(0 if conn is None or conn.getresponse().status == 200 else 1)"]

# SIGTERM: jobs in flight get up to 30 s to finish (compose.yaml's stop_grace_period allows for it).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
