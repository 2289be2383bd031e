#!/usr/bin/env bash
# Experiment ar1free_nicv2_391_latent_conv5_4dw_m1500:
#   AR1*-free on NICv2-391, latent replay at conv5_4/dw, memory 1500, runs 0-4, device cpu, profile fixed.
# Written by prepare_experiment.py (latent-replay @VERSION@); trains in the image latent-replay:@VERSION@, no GPU (--device cpu).
# Arguments are passed on to `latent-replay train`, e.g. --force (train finished runs again) or --runs 0.
# DOCKER=podman selects another docker-compatible command.
set -euo pipefail

docker="${DOCKER:-docker}"
image=latent-replay:@VERSION@

if ! "$docker" image inspect "$image" >/dev/null 2>&1; then
    printf 'run_experiment.sh: image %s is not available to %s; build it with: %s build -t %s <latent-replay checkout>\n' \
        "$image" "$docker" "$docker" "$image" >&2
    exit 1
fi
mkdir -p '/home/me/my results'
tty=()
if [ -t 0 ] && [ -t 1 ]; then tty=(-it); fi

status=0
"$docker" run --rm --init ${tty[@]+"${tty[@]}"} \
    --network none \
    --user "$(id -u):$(id -g)" \
    -e "GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736}" \
    -v '/data/core 50:/datasets:ro' \
    -v /data/lists:/filelists:ro \
    -v /data/w.pt:/weights/w.pt:ro \
    -v '/home/me/my results:/results' \
    "$image" \
    train --config /results/ar1free_nicv2_391_latent_conv5_4dw_m1500/exp_configuration.json "$@" || status=$?
if [ "$status" -ne 0 ]; then
    printf 'run_experiment.sh: training failed (exit %s)\n' "$status" >&2
fi
exit "$status"
