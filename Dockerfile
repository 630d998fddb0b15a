FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

RUN useradd --system --create-home --home-dir /var/lib/mediafed mediafed
WORKDIR /opt/mediafed
COPY pyproject.toml README.md ./
COPY mediafed ./mediafed
COPY loadtest ./loadtest
RUN pip install . && mkdir -p /var/lib/mediafed/data && chown -R mediafed /var/lib/mediafed

USER mediafed
WORKDIR /var/lib/mediafed
EXPOSE 7880/tcp 7881/tcp 7882/udp
ENTRYPOINT ["mediafed"]
CMD ["serve"]
