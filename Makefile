# cgroupfs — every target does its own set-up (system packages, virtualenv, install).
# Run as root on a Debian host.  Variables can be overridden: make run ARGS="--no-docker".

PYTHON      ?= python3
VENV        ?= .venv
MOUNTPOINT  ?= /var/lib/cgroupfs
ARGS        ?=
PYTEST_ARGS ?=

# System packages, one list per purpose (Debian names).
RUN_PACKAGES   := fuse3 libfuse3-3 python3-venv
TEST_PACKAGES  := $(RUN_PACKAGES) docker.io busybox-static prometheus systemd util-linux procps
BENCH_PACKAGES := $(TEST_PACKAGES) lxcfs

VENV_STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-integration test-docker bench deps-run deps-test deps-bench venv clean

# Install the missing Debian packages among $(1); apt-get update only when something is missing.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps-run:
	$(call apt_install,$(RUN_PACKAGES))

deps-test:
	$(call apt_install,$(TEST_PACKAGES))

deps-bench:
	$(call apt_install,$(BENCH_PACKAGES))

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV_STAMP)

run: deps-run venv
	$(VENV)/bin/cgroupfs daemon --mountpoint $(MOUNTPOINT) $(ARGS)

test: deps-test venv
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(VENV)/bin/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: deps-test venv
	$(VENV)/bin/python -m pytest tests/integration $(PYTEST_ARGS)

test-docker: deps-test venv
	$(VENV)/bin/python -m pytest tests/docker $(PYTEST_ARGS)

bench: deps-bench venv
	$(VENV)/bin/python -m benchmarks.reads $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
