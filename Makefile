# skyreduce: the two Quick-start targets are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian packages the tests use: independent references, and the one-node SLURM
# (slurm-wlm + munge) that tests/slurm_setup.py starts for the `slurm` tests
DEBS   := fitsverify wcstools iraf iraf-noao montage slurm-wlm munge

.PHONY: demo test install install-test debs bench clean

$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# the build backend too: tests/test_install.py builds the wheel offline, without build isolation
$(VENV)/.test: $(VENV)/.runtime
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet 'setuptools>=69' wheel
	touch $@

install: $(VENV)/.runtime
install-test: $(VENV)/.test

## demo: simulate a small SWAS and MIPS data set and ingest both on a LocalCluster
demo: install
	$(BIN)/skyreduce demo --out demo-output

## debs: install the Debian tools the tests compare against and SLURM + munge (root or sudo)
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi

## test: install everything the tests need, then run the whole suite
test: install-test debs
	USER=$${USER:-skyreduce} $(BIN)/python -m pytest --durations=20

## bench: ingest throughput and scaling (prints the figures)
bench: install-test
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf demo-output bench-output .pytest_cache
