#!/usr/bin/env python3
"""The original launcher's entry point: ``prepare_experiment.py METHOD SCENARIO REPLAY DB_PATH [options]``.

A thin shim around :func:`latent_replay.launch.main` (also ``latent-replay prepare``). It works from any
folder, with the package installed or straight from this checkout's ``project_source/``.
"""
import sys
from pathlib import Path

try:
    import latent_replay  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "project_source"))

from latent_replay.launch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
