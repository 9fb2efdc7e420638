# One image for the API and the GPU worker: `show1 serve` (default) or `show1 worker`.
# Weights are never baked in: mount a volume at /models (filled by `show1 download-weights`).
#
# CUDA: torch 2.13.0's stable CUDA builds are 12.6 and 13.0 (PyTorch publishes no 12.8 build of it).
# Default: 13.0, which needs an NVIDIA driver >= 580 on the GPU nodes. Older drivers:
#   docker build --build-arg TORCH_CUDA=cu126 --build-arg CUDA_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04 .
# The torch wheels bring their own CUDA and cuDNN libraries (pip packages), so the base image is the
# small CUDA `base` flavour (driver plumbing only) rather than `runtime`/`cudnn`, whose copies of the
# same libraries would add gigabytes to every pull when the workers scale up from zero.

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

FROM ${CUDA_IMAGE} AS builder
ARG TORCH_CUDA=cu130
ARG TORCH_VERSION=2.13.0
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The pinned CUDA build of torch first, from PyTorch's index (its +cuXXX build outranks PyPI's plain
# one; PyPI only supplies dependencies that index lacks), so the project's `torch==2.13.0` is already
# met and pip never swaps in another build.
RUN pip install --index-url https://download.pytorch.org/whl/${TORCH_CUDA} \
        --extra-index-url https://pypi.org/simple "torch==${TORCH_VERSION}" \
    && python -c "import torch, sys; sys.exit(torch.version.cuda is None)"
WORKDIR /src
# Dependencies in their own layer (empty packages stand in for the code), so a code change does not
# reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir app worker models && touch app/__init__.py worker/__init__.py models/__init__.py \
    && pip install . && pip uninstall -y show1-service && rm -rf app worker models build ./*.egg-info
COPY app app
COPY worker worker
COPY models models
RUN pip install --no-deps . && show1 --help >/dev/null

FROM ${CUDA_IMAGE} AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 show1 \
    && mkdir -p /models /data && chown show1 /models /data
COPY --from=builder /opt/venv /opt/venv
# HF_HOME and SHOW1_MODELS_DIR point at the weights volume; SHOW1_CACHE_DIR and the local storage
# backend at /data (a volume or an emptyDir).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/models/.hf \
    SHOW1_MODELS_DIR=/models \
    SHOW1_CACHE_DIR=/data/cache \
    SHOW1_LOCAL_STORAGE_DIR=/data/storage
USER 10001
WORKDIR /home/show1
EXPOSE 8000
# The API's liveness; the worker overrides it (compose and the manifests check its alive file).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python3 -c "import httpx,sys; sys.exit(httpx.get('http://127.0.0.1:8000/healthz').status_code != 200)"
ENTRYPOINT ["show1"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
