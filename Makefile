# bulkhead — the two commands of the README:
#   make run    install what is needed, then run a container from the offline busybox image
#   make test   install what is needed, then run ruff, mypy and the whole test suite
#
# Everything runs as root on Debian 12. System packages come from apt, Python
# packages from pip (pyproject.toml) into ./.venv.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE := $(VENV)/.installed

# What `make run` needs on a fresh machine.
RUN_DEBS := python3 python3-venv python3-pip busybox-static libseccomp2 procps tini gcc libc6-dev nftables
# What the test suite needs on top: real peers to compare with and drive us.
TEST_DEBS := $(RUN_DEBS) runc crun podman containerd uidmap iproute2 hyperfine docker-registry apache2-utils skopeo umoci iperf3 docker-compose

# The cgroup v2 lane: this project's machines are cgroup v1 hybrids, so the
# tests that need a cgroup-v2-only kernel run in a throwaway QEMU guest (see
# ../shared/vmtest/README.md). `$(VMTEST) --setup` installs qemu-system-x86,
# busybox-static, kmod and xz-utils with apt and unpacks a Debian kernel into
# /var/cache/cgroup2-vm on first use; later runs only check. One boot runs
# the cgroups library suite and the rootfs tests that need cgroup2.
VMTEST ?= ../shared/vmtest/run-in-cgroup2-vm
VMTEST_TIMEOUT ?= 600
CGROUPV2_TESTS := tests/cgroupv2 \
	tests/integration/test_rootfs.py::test_default_spec \
	tests/integration/test_rootfs.py::test_cgroup_v2_fresh_mount_in_cgroup_namespace \
	tests/integration/test_rootfs.py::test_cgroup_v2_bind_of_own_cgroup

.PHONY: run run-runtime test deps test-deps lint typecheck pytest test-cgroupv2 bench bench-cgroups bench-layers bench-pull bench-engine bench-engine-debs bench-network bench-monitor bench-stats clean

$(STATE): pyproject.toml
	@need=""; for p in $(RUN_DEBS); do dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	if [ -n "$$need" ]; then \
	  echo "apt: installing$$need"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$need; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	# Bytecode now, so that no container start pays for compiling (and a
	# PYTHONDONTWRITEBYTECODE environment does not make every start pay).
	$(PY) -m compileall -q src
	touch $(STATE)

# The monitor's steady-state loop (bh-monitor), exec'd by the Python monitor after set-up.
MONITOR_BIN := src/bulkhead/engine/bh-monitor

$(MONITOR_BIN): src/bulkhead/engine/monitor_loop.c | $(STATE)
	cc -O2 -Wall -Wextra -Werror -static -o $@ $<

deps: $(STATE) $(MONITOR_BIN)

test-deps: deps
	@need=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	if [ -n "$$need" ]; then \
	  echo "apt: installing$$need"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$need; \
	fi

run: deps
	# The offline default image busybox:latest (Debian's busybox-static) in the engine's image store.
	$(PY) -m bulkhead.images.busybox --store /var/lib/bulkhead/images
	# The CLI starts the daemon (/run/bulkhead/bulkhead.sock) when none answers; it keeps running.
	$(VENV)/bin/bulkhead run --rm busybox echo "hello from a bulkhead container"

# The runtime alone, without the daemon: a bundle from busybox-static run by bulkhead-runtime.
run-runtime: deps
	$(PY) -m bulkhead.runtime.demo

lint: deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: deps
	$(VENV)/bin/mypy

pytest: test-deps
	$(PY) -m pytest -q -p no:cacheprovider tests

test-cgroupv2: test-deps
	$(VMTEST) --setup
	$(VMTEST) --timeout $(VMTEST_TIMEOUT) -- $(abspath $(PY)) -m pytest -q -p no:cacheprovider $(CGROUPV2_TESTS)

test: test-deps lint typecheck pytest test-cgroupv2

bench: test-deps
	$(PY) bench/runtime_start.py

# What a container's cgroup adds to a start: bulkhead in-process and vs crun/runc.
bench-cgroups: test-deps
	$(PY) bench/cgroup_overhead.py

# Layer apply vs GNU tar, umoci and podman import, on a fresh journaled ext4 loop device.
bench-layers: test-deps
	$(PY) bench/layer_apply.py

# Pull of a ~200 MB image from a local docker-registry: bulkhead vs skopeo copy.
bench-pull: test-deps
	$(PY) bench/pull.py

# The engine side by side: `run --rm busybox true` and 20 detached containers, bulkhead vs
# podman vs Debian's dockerd. dockerd (docker.io) is a peer of this benchmark only, not of
# the tests: installed here with its service kept from starting (the benchmark starts its own
# dockerd on temporary roots); /usr/local/bin/docker, the 28.2 client, stays first on PATH.
BENCH_ENGINE_DEBS := docker.io

bench-engine-debs:
	@need=""; for p in $(BENCH_ENGINE_DEBS); do dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	if [ -n "$$need" ]; then \
	  echo "apt: installing$$need (services not started)"; \
	  guard=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; guard=1; \
	  fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$need; \
	  rc=$$?; if [ -n "$$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$rc; \
	fi

bench-engine: test-deps bench-engine-debs
	$(PY) bench/engine_run.py

# What a bridge network adds to `run --rm busybox true` (bridge vs none) for bulkhead, podman
# and dockerd, each inside a network namespace of the benchmark's own; iperf3 throughput
# container<->container and through a published port, against the namespace's loopback.
bench-network: test-deps bench-engine-debs
	$(PY) bench/network.py

# Memory of the per-container monitor: bulkhead's (in-process runtime and runc) vs podman's
# conmon vs containerd-shim-runc-v2, 20 sleeping busybox containers each (PSS/RSS/USS).
bench-monitor: test-deps
	$(PY) bench/monitor_memory.py

# docker stats' CPU % of busybox hogs at --cpus 0.5 and 1.0: our API vs the cgroup's own count
# vs the stock docker CLI's figure.
bench-stats: test-deps
	$(PY) bench/stats_accuracy.py

clean:
	rm -rf $(VENV) build src/*.egg-info
