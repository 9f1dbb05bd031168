# faceledger as a container: the same install as `make setup` (pip from pyproject.toml; the models come
# inside the PyPI wheels, nothing is downloaded at run time), a non-root user, state in a volume.
#   docker build -t faceledger .
#   docker run -p 8080:8080 -v faceledger-data:/data faceledger
#   docker run --rm -v faceledger-data:/data faceledger faceledger keys create --tenant acme --scopes admin --purpose "..."
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FACELEDGER_HOME=/data \
    FACELEDGER_HOST=0.0.0.0 \
    FACELEDGER_PORT=8080

RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin faceledger \
    && mkdir -p /data && chown faceledger:faceledger /data && chmod 700 /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[postgres,milvus]" && rm -rf /root/.cache

USER faceledger
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/v1/health', timeout=4).status != 200)"
CMD ["faceledger", "serve"]
