# Placeholder until the Docker issue (#5) lands: the image will carry the trainer for run_experiment.sh.
# BASE_IMAGE is an argument so that the image can be built on a local base where no registry is reachable.
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}
WORKDIR /opt/project
COPY pyproject.toml README.md ./
COPY project_source ./project_source
RUN python -m pip install --no-cache-dir .
ENTRYPOINT ["latent-replay"]
