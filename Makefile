# Two commands do everything: `make demo` and `make test` (each sets up .venv first when needed).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# glibc returns freed blocks to the kernel and re-faults them every minibatch; keeping them roughly
# doubles CPU training speed for ~1 GB more peak RSS (docs/performance.md, "Allocator setting").
export GLIBC_TUNABLES ?= glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736
DEMO_DIR ?= demo_output

.PHONY: setup demo test clean help docker-test slurm-test

help:
	@echo "make demo   - set up .venv if needed, then run the demo on a synthetic CORe50 (in $(DEMO_DIR)/)"
	@echo "make test   - set up .venv if needed, then run the test suite"
	@echo "make setup  - create .venv and install the package with its test dependencies"
	@echo "make clean  - remove .venv and demo output"

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/latent-replay demo --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The container smoke test (slow, needs root): installs podman & co. from Debian when missing, then builds the
# Dockerfile on a local Debian base and trains in the image (tests/test_docker.py, docs/launcher.md).
DOCKER_TEST_DEBS = podman catatonit runc fuse-overlayfs slirp4netns uidmap debootstrap shellcheck
docker-test: $(STAMP)
	@dpkg -s $(DOCKER_TEST_DEBS) >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DOCKER_TEST_DEBS); }
	$(PY) -m pytest -q -m slow tests/test_docker.py -rs $(PYTEST_ARGS)

# The Slurm integration test (slow, needs root): installs slurmctld, slurmd, slurm-client and munge from Debian when
# missing, then starts a one-node cluster on this machine and runs a small sweep on it (tests/test_slurm.py, docs/sweep.md).
SLURM_TEST_DEBS = slurmctld slurmd slurm-client munge
slurm-test: $(STAMP)
	@dpkg -s $(SLURM_TEST_DEBS) >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SLURM_TEST_DEBS); }
	$(PY) -m pytest -q -m slow tests/test_slurm.py -rs $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR)
