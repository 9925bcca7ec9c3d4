# lance-bridge daemon image.
#   docker build -t lance-bridge .
#   docker run -d -p 8080:8080 -v lance-bridge-data:/data \
#     -e LANCE_BRIDGE_LANCE__TOKEN=... -e LANCE_BRIDGE_SERVER__API_TOKENS=... lance-bridge
# The config file is read from /data/lance-bridge.toml when present (or pass `serve -c FILE`);
# every key can be set with LANCE_BRIDGE_* variables instead.
#
# The base image is pinned by digest (the tag beside it says which one it is) and the Python
# dependencies by constraints.txt (how to regenerate it is at its top): a rebuild gets the
# same bits. Linted in CI with hadolint (.hadolint.yaml).

FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS build
# `--build-arg EXTRAS=[postgres]` adds the PostgreSQL ledger's driver (docker-compose.yml does).
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY bridge ./bridge
COPY connectors ./connectors
RUN pip wheel --no-cache-dir --disable-pip-version-check -c constraints.txt --wheel-dir /wheels ".${EXTRAS}" \
    && echo "${EXTRAS}" > /wheels/extras

FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANCE_BRIDGE_LEDGER__PATH=/data/lance-bridge.db \
    LANCE_BRIDGE_SERVER__HOST=0.0.0.0
COPY --from=build /wheels /wheels
COPY --from=build /src/constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir --disable-pip-version-check --no-index --find-links=/wheels \
        -c /tmp/constraints.txt "lance-bridge$(cat /wheels/extras)" \
    && rm -rf /wheels /tmp/constraints.txt \
    && groupadd --system --gid 10001 lance \
    && useradd --system --uid 10001 --gid lance --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin lance \
    && mkdir -p /data \
    && chown lance:lance /data
WORKDIR /data
VOLUME /data
# Numeric, so a runtime that checks runAsNonRoot can tell without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
# Reads the config as serve does (/data/lance-bridge.toml, LANCE_BRIDGE_*), so a port set in
# the file is the one checked. A container started with `serve -c FILE` checks the same file:
# `docker run --health-cmd "lance-bridge healthcheck -c FILE" ...`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["lance-bridge", "healthcheck"]
CMD ["lance-bridge", "serve"]
