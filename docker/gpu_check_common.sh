#!/usr/bin/env bash
# Shared body of docker/first_check_*.sh (sourced, not run): checks that a container of the
# latent-replay image sees the GPU with the GPU options of one Docker flavour. The sourcing script sets
#   gpu_options  (array)  docker run options that pass the GPU
#   ok_message   (text)   what to prepare experiments with when the check passes
#   cuda_hint    (text)   flavour-specific hint when the container starts but sees no CUDA device
#   start_hints  (array)  hints when docker cannot start the container with gpu_options
# and passes its own arguments ([IMAGE]) through "$@". DOCKER=podman replaces docker.
# shellcheck disable=SC2154  # the variables above come from the sourcing script

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
checkout="$(dirname "$here")"
version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$checkout/pyproject.toml" 2>/dev/null | head -n 1)"
image="${1:-latent-replay:${version:-latest}}"
docker="${DOCKER:-docker}"
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
        echo "$name: OK: the image sees the GPU; $ok_message"
        exit 0
        ;;
    3)
        fail "the container started but PyTorch sees no CUDA device" \
            "check the host driver: nvidia-smi must list the GPU" \
            "the driver must support the CUDA version printed above (CUDA 13.0, the default image: driver >= 580; nvidia-smi shows it)" \
            "$cuda_hint"
        ;;
    *)
        fail "$docker could not start the container with ${gpu_options[*]} (exit $status; its message is above)" \
            "${start_hints[@]}"
        ;;
esac
