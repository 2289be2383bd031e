#!/usr/bin/env bash
# First check for nvidia-docker2 (the NVIDIA runtime registered in Docker, `--runtime=nvidia`): does a
# container of the latent-replay image see the GPU? Run it once per machine before the run_experiment.sh
# scripts prepared with --nvidia_docker old (the default, or nvidia-docker2).
#   docker/first_check_nvidia-docker2.sh [IMAGE]    (IMAGE defaults to latent-replay:<version of this checkout>)
# DOCKER=podman (or another docker-compatible command) replaces docker. Exit code 0 when the GPU works.
set -euo pipefail

gpu_options=(--runtime=nvidia)
ok_message="prepare experiments with --nvidia_docker old (or nvidia-docker2)"
cuda_hint="the nvidia runtime must pass the GPU: docker info | grep -i runtime lists nvidia"
start_hints=(
    "install nvidia-docker2 (https://github.com/NVIDIA/nvidia-docker) and restart Docker: sudo systemctl restart docker"
    "unknown runtime nvidia: register it in /etc/docker/daemon.json (sudo nvidia-ctk runtime configure --runtime=docker) and restart Docker"
    "with only the NVIDIA Container Toolkit installed, run docker/first_check_nvidia-container-toolkit.sh and prepare with --nvidia_docker new"
)
# shellcheck source=SCRIPTDIR/gpu_check_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_check_common.sh"
