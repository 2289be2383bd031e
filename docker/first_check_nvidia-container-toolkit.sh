#!/usr/bin/env bash
# First check for the NVIDIA Container Toolkit (Docker >= 19.03, `--gpus all`): does a container of
# the latent-replay image see the GPU? Run it once per machine before the run_experiment.sh scripts
# prepared with --nvidia_docker new (or nvidia-container-toolkit).
#   docker/first_check_nvidia-container-toolkit.sh [IMAGE]    (IMAGE defaults to latent-replay:<version of this checkout>)
# DOCKER=podman (or another docker-compatible command) replaces docker. Exit code 0 when the GPU works.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
checkout="$(dirname "$here")"
version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$checkout/pyproject.toml" 2>/dev/null | head -n 1)"
image="${1:-latent-replay:${version:-latest}}"
docker="${DOCKER:-docker}"
gpu_options=(--gpus all)
name="$(basename "$0")"

fail() {
    printf '%s: FAILED: %s\n' "$name" "$1" >&2
    shift
    for hint in "$@"; do
        printf '  - %s\n' "$hint" >&2
    done
    exit 1
}

command -v "$docker" >/dev/null 2>&1 ||
    fail "'$docker' is not installed" "install Docker: https://docs.docker.com/engine/install/"
"$docker" image inspect "$image" >/dev/null 2>&1 ||
    fail "the image $image is not available to $docker" \
        "build it: $docker build -t $image $(printf '%q' "$checkout")" \
        "is the Docker daemon running, and may you use it? ($docker info)"

echo "$name: $docker run --rm ${gpu_options[*]} $image check-gpu"
status=0
"$docker" run --rm "${gpu_options[@]}" "$image" check-gpu || status=$?
case "$status" in
    0)
        echo "$name: OK: the image sees the GPU; prepare experiments with --nvidia_docker new (or nvidia-container-toolkit)"
        exit 0
        ;;
    3)
        fail "the container started but PyTorch sees no CUDA device" \
            "check the host driver: nvidia-smi must list the GPU" \
            "the driver must support the CUDA version printed above (CUDA 13.0, the default image: driver >= 580; nvidia-smi shows it)" \
            "Docker must run the container through the toolkit: sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker"
        ;;
    *)
        fail "$docker could not start the container with ${gpu_options[*]} (exit $status; its message is above)" \
            "install the NVIDIA Container Toolkit: https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html" \
            "could not select device driver with capabilities [[gpu]]: configure Docker for it (sudo nvidia-ctk runtime configure --runtime=docker) and restart Docker (sudo systemctl restart docker)" \
            "--gpus needs Docker >= 19.03 ($docker version)" \
            "with nvidia-docker2 instead, run docker/first_check_nvidia-docker2.sh and prepare with --nvidia_docker old"
        ;;
esac
