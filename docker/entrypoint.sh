#!/bin/sh
# Entrypoint of the latent-replay image.
#   docker run IMAGE ARGS...   runs `latent-replay ARGS...` (e.g. train --config /results/<experiment>/exp_configuration.json)
#   docker run IMAGE check-gpu reports whether PyTorch sees a CUDA device (used by docker/first_check_*.sh)
set -eu

# A --user uid:gid that has no entry in /etc/passwd gets HOME=/, which it cannot write.
if [ ! -w "${HOME:-/}" ]; then
    export HOME=/tmp
fi

if [ "${1:-}" = "check-gpu" ]; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L || true
    else
        echo "nvidia-smi is not in the container (the NVIDIA runtime mounts it when it passes a GPU)"
    fi
    exec python3 - <<'PY'
import sys

import torch

print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}")
if not torch.cuda.is_available():
    print("PyTorch sees no CUDA device", file=sys.stderr)
    sys.exit(3)
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i}: {torch.cuda.get_device_name(i)}")
x = torch.arange(8, device="cuda", dtype=torch.float32)
assert float((x * 2).sum()) == 56.0
print("ok: PyTorch computes on the GPU")
PY
fi

exec latent-replay "$@"
