# Build stage: compile the optional native steps (mediafed/transport/_transport.c,
# mediafed/media/_forward.c) into a wheel; the runtime image needs no compiler.
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
# The wheel with its runtime dependencies only (no extras), as `pip install .`
# installs it. The check imports every module of mediafed (all that `mediafed
# serve` loads), so an import that needs a package missing here fails the build,
# then the native modules and their steps (read loop, send target, receive,
# fan-out) in use; tests/test_install.py runs this same check in a fresh venv.
RUN pip install /tmp/wheels/*.whl && rm -rf /tmp/wheels \
    && python -c "import importlib, pkgutil, mediafed, mediafed.cli, mediafed.server; \
[importlib.import_module(m.name) for m in pkgutil.walk_packages(mediafed.__path__, 'mediafed.') if not m.name.endswith('.__main__')]; \
import mediafed.transport._transport, mediafed.media._forward; \
from mediafed.transport import native as t; from mediafed.media import native as m; \
assert t.read_datagrams and t.native_send_target and m.receive_rtp and m.fanout is not m.py_fanout \
and m.native_peer, 'native steps not in use'" \
    && mediafed --version \
    && mkdir -p /var/lib/mediafed/data && chown -R mediafed /var/lib/mediafed

USER mediafed
WORKDIR /var/lib/mediafed
EXPOSE 7880/tcp 7881/tcp 7882/udp
ENTRYPOINT ["mediafed"]
CMD ["serve"]
