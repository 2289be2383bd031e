# latent-replay: the trainer (`latent-replay`) on a CUDA-enabled PyTorch image.
#   docker build -t latent-replay:0.1.0 .
# Datasets are expected at /datasets (read-only), results at /results (writable); run_experiment.sh
# (written by run_experiments/prepare_experiment.py) mounts them. The official NICv2 filelists of
# batch_filelists/ are copied in (LATENT_REPLAY_FILELISTS names them). Details: docker/README.md.
#
# BASE_IMAGE: any image with Python >= 3.10 (with the venv module) as "python3"; the default carries
# torch 2.14.1 built for CUDA 13.0. Tests build on a local Debian base (no registry needed).
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

# REQUIREMENTS: the pinned requirements file in the build context. PIP_OPTIONS: extra pip options, e.g.
# "--no-index" for an offline build from the wheels placed in docker/wheels/ (split into words on purpose).
ARG REQUIREMENTS=docker/requirements.txt
ARG PIP_OPTIONS=""

LABEL org.opencontainers.image.title="latent-replay" \
      org.opencontainers.image.description="Latent Replay for Real-Time Continual Learning on CORe50 (PyTorch)"

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LATENT_REPLAY_CACHE=/results/.cache \
    LATENT_REPLAY_FILELISTS=/opt/latent-replay/batch_filelists \
    MPLCONFIGDIR=/tmp/matplotlib \
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736

# A venv that sees the base image's packages: its torch counts as installed when it matches the pin.
# The non-root user owns nothing but /results; run_experiment.sh runs as the caller's uid:gid anyway.
RUN python3 -m venv --system-site-packages /opt/venv \
 && groupadd --gid 10001 latent \
 && useradd --create-home --uid 10001 --gid 10001 --shell /bin/sh latent \
 && mkdir -p /datasets /filelists /weights /results \
 && chown 10001:10001 /results

# Requirements before the source, so that a code change does not reinstall PyTorch.
COPY docker/wheels/ /tmp/wheels/
COPY ${REQUIREMENTS} /tmp/requirements.txt
RUN pip install --no-cache-dir ${PIP_OPTIONS} --find-links /tmp/wheels -r /tmp/requirements.txt

WORKDIR /opt/latent-replay
# The shipped filelists (the default filelists folder) before the source: they seldom change.
COPY batch_filelists/ ./batch_filelists/
COPY pyproject.toml README.md ./
COPY project_source/ ./project_source/
RUN pip install --no-cache-dir ${PIP_OPTIONS} --find-links /tmp/wheels --no-deps . \
 && rm -rf build project_source/*.egg-info \
 && latent-replay --version

COPY docker/entrypoint.sh /usr/local/bin/latent-replay-entrypoint
USER 10001:10001
WORKDIR /results
ENTRYPOINT ["/usr/local/bin/latent-replay-entrypoint"]
CMD ["--help"]
