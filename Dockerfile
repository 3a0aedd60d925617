# One image for every Switchboard service; the command picks the service:
#   docker run IMAGE gateway | router | offline_store
# or the switchboard command (python -m switchboard), e.g. before a release's stores start:
#   docker run IMAGE switchboard migrate
# Settings come from SWITCHBOARD_* environment variables (README, "Configuration").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never

WORKDIR /app
# The services' dependencies come from uv.lock, each at the version it pins, installed by uv at
# the version the lock pins (tests/deploy checks that the two agree).
RUN pip install uv==0.13.9
COPY pyproject.toml uv.lock README.md ./
COPY proto ./proto
COPY runtime ./runtime
COPY gateway ./gateway
COPY router ./router
COPY offline_store ./offline_store
COPY switchboard ./switchboard
RUN uv sync --frozen --no-default-groups --no-editable \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin switchboard
ENV PATH="/app/.venv/bin:$PATH"

USER 10001
# /livez, /readyz and /metrics of every service.
ENV SWITCHBOARD_METRICS_PORT=9100
# 8000: the gateway's WebSocket port (SWITCHBOARD_GATEWAY_PORT).
EXPOSE 8000 9100
ENTRYPOINT ["python", "-m"]
CMD ["gateway"]
