# The neural-reg worker image: the code and its pinned dependencies, installed once at build time (a container
# never runs pip at start and never writes into a checkout). docker-compose.yml builds it for the worker services.
#
#   docker build -t neural-reg-worker .                                  # CPU build of torch (the default)
#   docker build -t neural-reg-worker:cuda --build-arg TORCH_VARIANT=cu128 .   # a CUDA build, for GPU hosts
#
# TORCH_VARIANT names one of PyTorch's wheel indexes: cpu, or a CUDA build such as cu126 / cu128.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/${TORCH_VARIANT}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NEURALREG_HOME=/data \
    NEURALREG_CHECKPOINTS=/data/checkpoints

# graphviz: `neural-reg diagram` and the report's DataJoint diagram
RUN apt-get update \
    && apt-get install -y --no-install-recommends graphviz \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin neuralreg \
    && mkdir -p /data/checkpoints /store && chown -R neuralreg:neuralreg /data /store

WORKDIR /opt/neural-reg
# torch first, alone, from the chosen index (CPU unless told otherwise); the rest pinned by requirements.lock
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml requirements.lock README.md ./
COPY pipeline ./pipeline
COPY schemas ./schemas
COPY neural_reg ./neural_reg
RUN pip install -c requirements.lock . \
    && neural-reg --version

USER neuralreg
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["neural-reg"]
CMD ["worker"]
