#!/usr/bin/env python3
"""The original launcher's entry point: ``prepare_experiment.py METHOD SCENARIO REPLAY DB_PATH [options]``.

A thin shim around :func:`latent_replay.launch.main` (also ``latent-replay prepare``). It works from any
folder, with the package installed or straight from this checkout's ``project_source/``. When the Python
that runs it lacks the suite's dependencies (e.g. the system ``python3`` of the ``#!`` line), it runs
itself again with the checkout's ``.venv`` Python (made by ``make demo`` or ``make test``).
"""
import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent

try:
    import latent_replay  # noqa: F401
except ImportError:
    sys.path.insert(0, str(CHECKOUT / "project_source"))

try:
    from latent_replay.launch import main
except ModuleNotFoundError as error:
    venv = CHECKOUT / ".venv"
    in_venv = Path(sys.prefix).resolve() == venv.resolve()
    if (venv / "bin" / "python").is_file() and not in_venv and not os.environ.get("LATENT_REPLAY_SHIM_REEXEC"):
        os.environ["LATENT_REPLAY_SHIM_REEXEC"] = "1"
        python = str(venv / "bin" / "python")
        os.execv(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.exit(f"prepare_experiment.py: {sys.executable} lacks the module {error.name!r}"
             + ("" if in_venv else f" and there is no {venv}")
             + ": run `make test` (or `make demo`) once in the checkout, or `pip install -e .`")

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
