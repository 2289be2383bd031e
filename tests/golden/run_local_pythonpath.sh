#!/usr/bin/env bash
# Experiment ar1free_nicv2_391_latent_conv5_4dw_m1500:
#   AR1*-free on NICv2-391, latent replay at conv5_4/dw, memory 1500, runs 0-4, device auto, profile fixed.
# Written by prepare_experiment.py (latent-replay @VERSION@); runs the trainer on this machine.
# Arguments are passed on to `latent-replay train`, e.g. --force (train finished runs again) or --runs 0.
set -euo pipefail

export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736}"
export PYTHONPATH='/opt/latent replay/project_source'"${PYTHONPATH:+:$PYTHONPATH}"
exec /usr/bin/python3 -m latent_replay.cli train --config '/home/me/my results/ar1free_nicv2_391_latent_conv5_4dw_m1500/exp_configuration.json' "$@"
