# syntax=docker/dockerfile:1
# Training image (CoT-SFT, GRPO, evaluation, export) and GPU model serving: CUDA runtime, the CUDA build of vLLM,
# TRL/PEFT. Needs an NVIDIA GPU and the NVIDIA container toolkit at run time (docker run --gpus all).
#   docker build -f deploy/docker/training.Dockerfile -t rationad/training:0.1.0 .
#   docker run --gpus all -v $PWD/runs:/work/runs -v /data:/data rationad/training:0.1.0 -m training.prepare_base
# Linted in CI with hadolint (scripts/check_deploy.sh); not built there (no Docker engine, no GPU on CI machines).

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Ubuntu 24.04's Python 3.12. Versions follow the pinned base image (pin it by digest for reproducible builds).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python3 -m venv /opt/rationad/venv
COPY pyproject.toml README.md ./
COPY rationad ./rationad
COPY training ./training
RUN /opt/rationad/venv/bin/pip install ".[vllm,train]" \
 && /opt/rationad/venv/bin/python -c "import vllm, trl, peft, rationad.prompt"

FROM ${CUDA_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 rationad \
 && useradd --system --uid 10001 --gid rationad --home-dir /work --create-home --shell /usr/sbin/nologin rationad
COPY --from=build /opt/rationad/venv /opt/rationad/venv
COPY --chown=10001:10001 training /work/training
COPY --chown=10001:10001 models /work/models
ENV PATH=/opt/rationad/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/work \
    HF_HUB_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1
USER 10001:10001
WORKDIR /work
# The training entry points are modules: pass "-m training.<step> ..." as the command.
ENTRYPOINT ["python"]
CMD ["-m", "training.prepare_base"]
