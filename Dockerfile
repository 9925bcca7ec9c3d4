# lance-bridge daemon image.
#   docker build -t lance-bridge .
#   docker run -d -p 8080:8080 -v lance-bridge-data:/data \
#     -e LANCE_BRIDGE_LANCE__TOKEN=... -e LANCE_BRIDGE_SERVER__API_TOKENS=... lance-bridge
# The config file is read from /data/lance-bridge.toml when present (or pass `serve -c FILE`);
# every key can be set with LANCE_BRIDGE_* variables instead.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY connectors ./connectors
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANCE_BRIDGE_LEDGER__PATH=/data/lance-bridge.db \
    LANCE_BRIDGE_SERVER__HOST=0.0.0.0
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --disable-pip-version-check --no-index --find-links=/wheels \
        lance-bridge \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 lance \
    && useradd --system --uid 10001 --gid lance --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin lance \
    && mkdir -p /data \
    && chown lance:lance /data
WORKDIR /data
VOLUME /data
USER lance
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LANCE_BRIDGE_SERVER__PORT', '8080') + '/healthz', timeout=4)"]
CMD ["lance-bridge", "serve"]
