#!/usr/bin/env bash
# First check for the NVIDIA Container Toolkit (Docker >= 19.03, `--gpus all`): does a container of
# the latent-replay image see the GPU? Run it once per machine before the run_experiment.sh scripts
# prepared with --nvidia_docker new (or nvidia-container-toolkit).
#   docker/first_check_nvidia-container-toolkit.sh [IMAGE]    (IMAGE defaults to latent-replay:<version of this checkout>)
# DOCKER=podman (or another docker-compatible command) replaces docker. Exit code 0 when the GPU works.
set -euo pipefail

gpu_options=(--gpus all)
ok_message="prepare experiments with --nvidia_docker new (or nvidia-container-toolkit)"
cuda_hint="Docker must run the container through the toolkit: sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker"
start_hints=(
    "install the NVIDIA Container Toolkit: https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html"
    "could not select device driver with capabilities [[gpu]]: configure Docker for it (sudo nvidia-ctk runtime configure --runtime=docker) and restart Docker (sudo systemctl restart docker)"
    "--gpus needs Docker >= 19.03 (docker version)"
    "with nvidia-docker2 instead, run docker/first_check_nvidia-docker2.sh and prepare with --nvidia_docker old"
)
# shellcheck source=SCRIPTDIR/gpu_check_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_check_common.sh"
