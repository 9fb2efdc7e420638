# One image for the API and the GPU worker: `show1 serve` (default), `show1 worker` or `show1 up`.
# Weights are never baked in: mount a volume at /models (filled by `show1 download-weights`).
# Build with BuildKit (`docker buildx build`, or DOCKER_BUILDKIT=1 with a pre-23 client); deploy/README.md
# has the build arguments and deploy/check-image.sh builds and checks the image end to end.
#
# CUDA: torch 2.13.0's stable CUDA builds are 12.6 and 13.0 (PyTorch publishes no 12.8 build of it).
# Default: 13.0, which needs an NVIDIA driver >= 580 on the GPU nodes. Older drivers:
#   docker build --build-arg TORCH_CUDA=cu126 --build-arg CUDA_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04 .
# The torch wheels bring their own CUDA and cuDNN libraries (pip packages), so the base image is the
# small CUDA `base` flavour (driver plumbing only) rather than `runtime`/`cudnn`, whose copies of the
# same libraries would add gigabytes to every pull when the workers scale up from zero.
#
# Layers, so that a release that changes only code is a small pull: the base, then the dependencies
# (one layer keyed on pyproject.toml alone), then the project itself (a wheel, well under 1 MB).
#
# Behind a TLS-intercepting proxy, give pip its CA bundle as a build secret; it is mounted only while
# pip runs and is in no layer: --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

FROM ${CUDA_IMAGE} AS python
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# The dependencies: /opt/venv without the project.
FROM python AS deps
# cu126, cu130 or cpu: the build fails unless the installed torch is built for exactly this.
ARG TORCH_CUDA=cu130
ARG TORCH_VERSION=2.13.0
# Where torch comes from. PyPI (https://pypi.org/simple) serves torch 2.13.0 built for CUDA 13.0 only, so
# with it TORCH_CUDA must be cu130: anything else fails the check below rather than shipping a torch
# that needs another driver.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_CUDA}
# Everything else (torch's own dependencies too, where TORCH_INDEX_URL lacks them).
ARG PYPI_INDEX_URL=https://pypi.org/simple
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY deploy/check_torch_cuda.py /usr/local/bin/check_torch_cuda.py
# The pinned torch first, so the project's `torch==2.13.0` is already met and pip never swaps in
# another build; then the check, because pip falls back to the extra index without a word when
# TORCH_INDEX_URL does not answer.
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url "${PYPI_INDEX_URL}" \
        "torch==${TORCH_VERSION}" \
    && python /usr/local/bin/check_torch_cuda.py "${TORCH_CUDA}"
WORKDIR /src
# Only pyproject.toml: empty packages and README stand in for the code, so neither a code change nor a
# README change reinstalls the dependencies.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && mkdir app worker models && touch README.md app/__init__.py worker/__init__.py models/__init__.py \
    && pip install --index-url "${PYPI_INDEX_URL}" . && pip uninstall -y show1-service \
    && rm -rf /src/* \
    && python /usr/local/bin/check_torch_cuda.py "${TORCH_CUDA}"

# The project as a wheel, built beside the dependencies (setuptools stays out of the image).
FROM deps AS wheel
ARG PYPI_INDEX_URL=https://pypi.org/simple
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install --index-url "${PYPI_INDEX_URL}" "setuptools>=69"
COPY pyproject.toml README.md ./
COPY app app
COPY worker worker
COPY models models
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${CUDA_IMAGE} AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 show1 \
    && mkdir -p /models /data && chown show1 /models /data
# The big layer: it changes only when pyproject.toml or the torch build arguments do.
COPY --from=deps /opt/venv /opt/venv
# The small one: the project's code.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    /opt/venv/bin/pip install --no-deps --no-index --no-cache-dir /wheels/*.whl \
    && /opt/venv/bin/show1 --help >/dev/null
# HF_HOME and SHOW1_MODELS_DIR point at the weights volume; SHOW1_CACHE_DIR, the local storage backend
# and `show1 up`'s data (SHOW1_DATA_DIR: embedded Redis, storage) at /data (a volume or an emptyDir).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/models/.hf \
    SHOW1_MODELS_DIR=/models \
    SHOW1_CACHE_DIR=/data/cache \
    SHOW1_DATA_DIR=/data \
    SHOW1_LOCAL_STORAGE_DIR=/data/storage
USER 10001
WORKDIR /home/show1
EXPOSE 8000
# One check for every role, told apart by the container's command (worker/health.py): the API's
# /healthz, the worker's alive file, both for `up`. The start period covers loading tens of GB of
# weights onto a GPU; a role that answers earlier is healthy at once.
HEALTHCHECK --interval=15s --timeout=5s --start-period=15m --retries=3 CMD ["show1", "healthcheck"]
ENTRYPOINT ["show1"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
