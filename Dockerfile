# Build stage: compile the optional native hot path (mediafed/transport/_hotpath.c)
# into a wheel; the runtime image needs no compiler.
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY mediafed ./mediafed
COPY loadtest ./loadtest
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

RUN useradd --system --create-home --home-dir /var/lib/mediafed mediafed
COPY --from=build /wheels /tmp/wheels
RUN pip install /tmp/wheels/*.whl && rm -rf /tmp/wheels \
    && python -c "from mediafed.transport import native as n; assert n.send_rtp and n.receive_rtp and n.read_datagrams" \
    && mkdir -p /var/lib/mediafed/data && chown -R mediafed /var/lib/mediafed

USER mediafed
WORKDIR /var/lib/mediafed
EXPOSE 7880/tcp 7881/tcp 7882/udp
ENTRYPOINT ["mediafed"]
CMD ["serve"]
