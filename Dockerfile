# One image for the API and the GPU worker: `show1 serve` (default) or `show1 worker`.
# Weights are never baked in: mount a volume at /models (filled by `show1 download-weights`).

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS builder
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The CUDA build of the pinned torch first, from PyTorch's index, so the project's `torch==2.13.0`
# requirement is already met and pip never pulls a different build.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu128 torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app app
COPY worker worker
COPY models models
RUN pip install --no-cache-dir .

FROM ${CUDA_IMAGE} AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 show1 \
    && mkdir -p /models /data && chown show1 /models /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/models/.hf \
    SHOW1_MODELS_DIR=/models \
    SHOW1_CACHE_DIR=/data/cache \
    SHOW1_LOCAL_STORAGE_DIR=/data/storage
USER show1
WORKDIR /home/show1
EXPOSE 8000
# The API's liveness; the worker overrides it (compose and the manifests run their own checks).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python3 -c "import httpx,sys; sys.exit(httpx.get('http://127.0.0.1:8000/healthz').status_code != 200)"
ENTRYPOINT ["show1"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
