# cgroupfs — every target does its own set-up (system packages, virtualenv, install).
# Run as root on a Debian host.  Variables can be overridden: make run ARGS="--no-docker".

PYTHON      ?= python3
VENV        ?= .venv
MOUNTPOINT  ?= /var/lib/cgroupfs
ARGS        ?=
PYTEST_ARGS ?=

# System packages, one list per purpose (Debian names).
RUN_PACKAGES   := fuse3 libfuse3-3 python3-venv
TEST_PACKAGES  := $(RUN_PACKAGES) docker.io busybox-static prometheus prometheus-node-exporter systemd util-linux procps containerd runc crun
# Host-only test packages: not in the v2 lane's VM image (tests/runtime runs on the host only).
HOST_TEST_PACKAGES := podman
BENCH_PACKAGES := $(TEST_PACKAGES) lxcfs

VENV_STAMP := $(VENV)/.installed

.PHONY: run lint test test-unit test-integration test-docker bench bench-neighbour bench-docker bench-restart bench-runtime bench-sysinfo deps-run deps-test deps-bench venv clean

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
	$(call apt_install,$(TEST_PACKAGES) $(HOST_TEST_PACKAGES))

deps-bench:
	$(call apt_install,$(BENCH_PACKAGES))

# daemon/cgroupfs-runtime: pip copies that script into bin/, even for an editable install.
$(VENV_STAMP): pyproject.toml daemon/cgroupfs-runtime
	$(PYTHON) -m venv $(VENV)
	@# pip's build chatter (setuptools' editable-install notices) goes to a log, shown on failure
	@$(VENV)/bin/pip install -q --upgrade pip >$(VENV)/install.log 2>&1 \
		&& $(VENV)/bin/pip install -q -e '.[test]' >>$(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log; exit 1; }
	touch $@

venv: $(VENV_STAMP)

run: deps-run venv
	$(VENV)/bin/cgroupfs daemon --mountpoint $(MOUNTPOINT) $(ARGS)

# ruff and mypy (configured in pyproject.toml), both run, either failing fails.  mypy cannot
# follow the editable install's import hook to daemon/: it finds cgroupfs_daemon through a
# link in $(VENV)/mypy-path.
lint: venv
	@mkdir -p $(VENV)/mypy-path && ln -sfn $(CURDIR)/daemon $(VENV)/mypy-path/cgroupfs_daemon
	@status=0; \
	echo "ruff check ."; $(VENV)/bin/ruff check . || status=1; \
	echo "mypy"; MYPYPATH=$(VENV)/mypy-path $(VENV)/bin/mypy || status=1; \
	exit $$status

test: deps-test venv lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Every test that needs nothing but the virtualenv (any user, no FUSE, cgroups or Docker):
# the `unit` lane, see tests/conftest.py.
test-unit: venv
	$(VENV)/bin/python -m pytest -m unit $(PYTEST_ARGS)

test-integration: deps-test venv
	$(VENV)/bin/python -m pytest tests/integration $(PYTEST_ARGS)

test-docker: deps-test venv
	$(VENV)/bin/python -m pytest tests/docker $(PYTEST_ARGS)

bench: deps-bench venv
	$(VENV)/bin/python -m benchmarks.reads $(ARGS)

bench-neighbour: deps-test venv
	$(VENV)/bin/python -m benchmarks.neighbour $(ARGS)

bench-docker: deps-test venv
	$(VENV)/bin/python -m benchmarks.docker_inject $(ARGS)

# Readers in 4 containers while the daemon is killed and restarted with its fd store,
# reloaded, and (the baseline) restarted without it: failed reads, longest wait.
bench-restart: deps-test venv
	$(VENV)/bin/python -m benchmarks.restart $(ARGS)

bench-runtime: deps-test venv
	$(VENV)/bin/python -m benchmarks.runtime_wrapper $(ARGS)

# sysinfo(2) in a runc container: plain, and answered by the daemon through cgroupfs-runtime
# (p50/p99, the daemon's CPU per 1000 calls); and beside a container calling it in a tight loop.
bench-sysinfo: deps-test venv
	$(VENV)/bin/python -m benchmarks.sysinfo $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache

# --- install as a service -------------------------------------------------------------
# make install [PREFIX=/opt/cgroupfs] [SYSTEMD_DIR=...] [CONFIG_FILE=...] [BIN_DIR=...]: a
# virtualenv at PREFIX with cgroupfs installed into it (not editable: the checkout can go
# away), `cgroupfs` on the PATH (a symlink in BIN_DIR), the unit with ExecStart= pointing
# there, the example settings unless settings exist.
# No DESTDIR: a virtualenv is not relocatable, it must be built where it will run.
PREFIX      ?= /opt/cgroupfs
SYSTEMD_DIR ?= /etc/systemd/system
CONFIG_FILE ?= /etc/default/cgroupfs
RUN_DIR     ?= /run/cgroupfs
BIN_DIR     ?= /usr/local/bin
UNIT_FILE   := $(SYSTEMD_DIR)/cgroupfs.service

.PHONY: install uninstall

install: deps-run
	@set -e; \
	case "$(PREFIX)" in /?*) ;; *) echo "PREFIX must be an absolute path, not '$(PREFIX)'" >&2; exit 2;; esac; \
	if [ -d "$(PREFIX)" ] && [ ! -f "$(PREFIX)/pyvenv.cfg" ] && [ -n "$$(ls -A "$(PREFIX)")" ]; then \
		echo "$(PREFIX) is not empty and not a virtualenv; refusing to install into it" >&2; exit 2; fi; \
	[ -x "$(PREFIX)/bin/python" ] || $(PYTHON) -m venv "$(PREFIX)"; \
	stage=$$(mktemp -d); trap 'rm -rf "$$stage"' EXIT; \
	tar -c --exclude=__pycache__ pyproject.toml cgroupfs daemon $$(ls README.md LICENSE 2>/dev/null) | tar -x -C "$$stage"; \
	"$(PREFIX)/bin/pip" install -q --disable-pip-version-check "$$stage"; \
	echo "installed $$("$(PREFIX)/bin/cgroupfs" version) in $(PREFIX)"; \
	mkdir -p "$(BIN_DIR)"; ln -sfn "$(PREFIX)/bin/cgroupfs" "$(BIN_DIR)/cgroupfs"; \
	mkdir -p "$(SYSTEMD_DIR)"; \
	sed -e 's|^ExecStart=/opt/cgroupfs/|ExecStart=$(PREFIX)/|' \
	    -e '/^Environment/s|/etc/default/cgroupfs|$(CONFIG_FILE)|' systemd/cgroupfs.service > "$(UNIT_FILE).tmp"; \
	chmod 0644 "$(UNIT_FILE).tmp"; mv "$(UNIT_FILE).tmp" "$(UNIT_FILE)"; \
	echo "installed $(UNIT_FILE)"; \
	if [ -e "$(CONFIG_FILE)" ]; then echo "kept $(CONFIG_FILE)"; \
	else mkdir -p "$$(dirname "$(CONFIG_FILE)")"; install -m 0644 systemd/cgroupfs.default "$(CONFIG_FILE)"; \
		echo "installed $(CONFIG_FILE)"; fi; \
	if [ -d /run/systemd/system ]; then \
		systemctl daemon-reload; \
		if [ "$$(systemctl show -P FragmentPath cgroupfs.service)" = "$(UNIT_FILE)" ] \
		   && systemctl is-active -q cgroupfs.service; then \
			systemctl reload cgroupfs.service; \
			echo "reloaded cgroupfs.service: the new version took the live mounts over"; fi; \
	fi; \
	echo; echo "Enable and start it with:  systemctl enable --now cgroupfs"

uninstall:
	@set -e; \
	if [ -d /run/systemd/system ] && [ "$$(systemctl show -P FragmentPath cgroupfs.service)" = "$(UNIT_FILE)" ]; then \
		systemctl disable --now cgroupfs.service; fi; \
	rm -f "$(UNIT_FILE)" "$(SYSTEMD_DIR)/multi-user.target.wants/cgroupfs.service"; \
	if [ "$$(readlink "$(BIN_DIR)/cgroupfs")" = "$(PREFIX)/bin/cgroupfs" ]; then rm -f "$(BIN_DIR)/cgroupfs"; fi; \
	if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	setting() { sed -n "s/^[[:space:]]*$$1[[:space:]]*=[[:space:]]*//p" "$(CONFIG_FILE)" 2>/dev/null \
		| tail -n 1 | tr -d "\"'"; }; \
	mountpoint=$$(setting CGROUPFS_MOUNTPOINT); mountpoint=$${mountpoint:-$(MOUNTPOINT)}; \
	views=$$(setting CGROUPFS_VIEWS_MOUNTPOINT); views=$${views:-$$mountpoint-views}; \
	for point in "$$mountpoint" "$$views"; do \
		while findmnt -n --mountpoint "$$point" 2>/dev/null | grep -q ' fuse\.cgroupfs'; do \
			umount -l "$$point"; echo "unmounted $$point"; done; \
		rmdir "$$point" 2>/dev/null || true; done; \
	if cmp -s systemd/cgroupfs.default "$(CONFIG_FILE)"; then rm -f "$(CONFIG_FILE)"; \
	elif [ -e "$(CONFIG_FILE)" ]; then echo "kept $(CONFIG_FILE): it has your changes (remove it by hand)"; fi; \
	rm -f "$(RUN_DIR)/state.json"; rmdir "$(RUN_DIR)" 2>/dev/null || true; \
	if [ -f "$(PREFIX)/pyvenv.cfg" ]; then rm -rf "$(PREFIX)"; fi; \
	echo "cgroupfs uninstalled"

# --- cgroup v2 test lane ------------------------------------------------------------------
# make test-v2 [V2_PYTEST_ARGS="tests/integration -k meminfo -ra"] [V2_TIMEOUT=3000]:
# the integration and Docker tests inside a QEMU VM (software emulation) booted with
# Debian's 6.1 kernel and cgroup_no_v1=all, so on a pure cgroup v2 machine (tests/vm/).
# The kernel, initramfs and root image are built once into $(CGROUPFS_VM_CACHE) (default
# /var/cache/cgroupfs-vm) and rebuilt when their recipe (tests/vm/build.py, the guest
# packages, pyproject.toml's dependencies) changes.  Exit code 100 means the
# VM itself failed (it says "VM infrastructure failure"), 124 that V2_TIMEOUT ran out.
V2_HOST_PACKAGES := qemu-system-x86 qemu-utils debootstrap e2fsprogs kmod python3-venv
V2_TEST_PATHS    ?= $(wildcard tests/vm tests/integration tests/docker tests/metrics tests/service/test_handoff.py)
# Tests marked `heavy` (load that does not depend on the cgroup version) run on the host
# lane only, and the first-instruction race is repeated 10 times instead of 60: the lane
# has to fit CI's budget (each `docker run` costs ~9 s under emulation).
V2_PYTEST_ARGS   ?= $(V2_TEST_PATHS) -m "not heavy" -ra --durations=10
V2_FIRST_READ_RUNS ?= 10
V2_TIMEOUT       ?= 3000
# Emulation runs Python 10-20x and `docker run` ~5x slower than the host: tests that wait
# for something with a deadline multiply it by CGROUPFS_TEST_TIME_SCALE.
V2_TIME_SCALE    ?= 10
# The runtime wrapper's first-instruction test repeats `docker run` 60 times on the host
# (enough to catch a 5% failure); a `docker run` takes ~5 s in the VM, so fewer there.
V2_RUNTIME_RUNS  ?= 8
V2_VM_ARGS       ?=

.PHONY: test-v2 test-v2-systemd deps-v2

deps-v2:
	$(call apt_install,$(V2_HOST_PACKAGES))

test-v2: deps-v2 venv
	$(VENV)/bin/python tests/vm/run.py --timeout $(V2_TIMEOUT) --packages "$(TEST_PACKAGES)" \
		--env CI=true --env CGROUPFS_EXPECT_CGROUP=v2 --env CGROUPFS_TEST_TIME_SCALE=$(V2_TIME_SCALE) \
		--env CGROUPFS_TEST_FIRST_READ_RUNS=$(V2_FIRST_READ_RUNS) \
		--env CGROUPFS_RUNTIME_TEST_RUNS=$(V2_RUNTIME_RUNS) \
		$(V2_VM_ARGS) \
		-- python3 -m pytest $(V2_PYTEST_ARGS)

# make test-v2-systemd [V2_SYSTEMD_PYTEST_ARGS="... -k reload"]: systemd/cgroupfs.service
# under a real systemd, in the same VM booted with Debian's systemd as pid 1 (run.py --init
# systemd): readiness before docker.service, reload, SIGKILL and the fd store, the
# watchdog, stop (tests/vm/test_systemd_service.py; -s shows the "measured:" lines).
V2_SYSTEMD_PYTEST_ARGS ?= tests/vm/test_systemd_service.py -ra -s
V2_SYSTEMD_TIMEOUT     ?= 1200

test-v2-systemd: deps-v2 venv
	$(VENV)/bin/python tests/vm/run.py --init systemd --timeout $(V2_SYSTEMD_TIMEOUT) --packages "$(TEST_PACKAGES)" \
		--env CI=true --env CGROUPFS_EXPECT_CGROUP=v2 --env CGROUPFS_TEST_TIME_SCALE=$(V2_TIME_SCALE) \
		$(V2_VM_ARGS) \
		-- python3 -m pytest $(V2_SYSTEMD_PYTEST_ARGS)
