# syntax=docker/dockerfile:1
#
# trainserve: one image for the API, the Celery workers and the migrations; the command
# picks the role (`api` by default; `worker --queues cpu`, `db upgrade`, `keys create ...`).
#
# Build argument TORCH_VARIANT picks the PyTorch build by naming the PyTorch wheel index
# (https://download.pytorch.org/whl/${TORCH_VARIANT}) that pip searches besides PyPI:
#   cpu (default)  the CPU wheel, 2.13.0+cpu (satisfies constraints.txt's torch==2.13.0)
#   cu130, ...     a CUDA wheel (cu130 is the CUDA 13.0 build, as on PyPI: NVIDIA driver
#                  >= 580); use a variant the index publishes for torch 2.13.0
#
#   docker build -t trainserve:cpu .
#   docker build --build-arg TORCH_VARIANT=cu130 -t trainserve:cuda .
#
# Run: docker compose up (see docker-compose.yml), or
#   docker run --rm -p 127.0.0.1:8000:8000 -v trainserve-data:/data trainserve:cpu
# and one GPU worker per GPU, with the TRAINSERVE_* settings docker-compose.yml gives:
#   docker run --gpus device=0 ... trainserve:cuda worker --queues gpu --concurrency 1

# ---------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder

ARG TORCH_VARIANT=cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# torch first, in its own layer: it is most of the image, and a source edit must not
# download it again. The PyTorch index serves 2.13.0+<variant>, which sorts above PyPI's
# plain 2.13.0 and satisfies the ==2.13.0 pin (PEP 440 local versions).
COPY constraints.txt ./
RUN pip install --no-cache-dir -c constraints.txt \
        --extra-index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
        torch==2.13.0

# Then the project itself, non-editable, into the venv (migrations and the built-in
# datasets ship inside the packages). The torch installed above already satisfies it.
COPY pyproject.toml README.md ./
COPY app/ app/
COPY core/ core/
COPY workers/ workers/
COPY models/ models/
COPY migrations/ migrations/
RUN pip install --no-cache-dir -c constraints.txt . \
    && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# ---------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime

ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="trainserve" \
      org.opencontainers.image.description="Trains neural networks and serves their predictions" \
      io.trainserve.torch-variant="${TORCH_VARIANT}"

# Fashion-MNIST, a built-in dataset, is Debian's package (models/data.py reads it from
# /usr/share/datasets/fashion-mnist): the API lists it and the workers train on it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       dataset-fashion-mnist=0.0~git20200523.55506a9-1 \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user with a fixed uid, so volumes keep the same owner across rebuilds.
# /data (database file, embedded broker, artifact store) is the only place it writes; a
# new named volume mounted there inherits this ownership.
RUN groupadd --system --gid 10001 trainserve \
    && useradd --system --uid 10001 --gid trainserve --create-home \
       --home-dir /home/trainserve --shell /usr/sbin/nologin trainserve \
    && mkdir -p /data \
    && chown trainserve:trainserve /data

# The venv and the source stay owned by root: the service cannot rewrite its own code.
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY app/ app/
COPY core/ core/
COPY workers/ workers/
COPY models/ models/
COPY migrations/ migrations/

# PYTORCH_NVML_BASED_CUDA_CHECK: a GPU worker's parent process asks whether CUDA is
# available; through NVML that leaves CUDA uninitialised, so the children it forks to train
# can still use it (a child of a parent that initialised CUDA cannot).
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRAINSERVE_DATA_DIR=/data \
    TRAINSERVE_HOST=0.0.0.0 \
    TRAINSERVE_PORT=8000 \
    PYTORCH_NVML_BASED_CUDA_CHECK=1

VOLUME /data
EXPOSE 8000

# No curl in slim images: ask Python. Meaningful for `api`; compose turns it off for the
# worker and the migration, which listen on nothing.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TRAINSERVE_PORT', '8000'), timeout=4)"]

# Numeric, so that Kubernetes' runAsNonRoot can verify it; this is the `trainserve` user.
USER 10001:10001
ENTRYPOINT ["trainserve"]
CMD ["api"]
