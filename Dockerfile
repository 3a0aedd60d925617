# One image for every Switchboard service; the command picks the service:
#   docker run IMAGE gateway | router | offline_store
# Settings come from SWITCHBOARD_* environment variables (README, "Configuration").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY gateway ./gateway
COPY router ./router
COPY offline_store ./offline_store
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin switchboard

USER 10001
# /livez, /readyz and /metrics of every service.
ENV SWITCHBOARD_METRICS_PORT=9100
# 8000: the gateway's WebSocket port (SWITCHBOARD_GATEWAY_PORT).
EXPOSE 8000 9100
ENTRYPOINT ["python", "-m"]
CMD ["gateway"]
