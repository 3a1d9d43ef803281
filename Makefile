# ucupdates: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= ./var
# Debian packages the appliance and its tests need, and the reference tools of the
# benchmarks (installed when missing). Daemons among them are not started by the install.
SYSTEM_PACKAGES := cabextract gcab openssl curl slapd ldap-utils rsyslog dnsutils knot-dnsutils \
	dnsmasq-base kea-dhcp4-server isc-dhcp-server \
	time nginx wrk dnsperf debootstrap vagrant iproute2 chromium chromium-driver \
	samba winbind prometheus libmonitoring-plugin-perl vagrant-libvirt postgresql \
	python3-psycopg2
STAMP_SYS := $(VENV)/.system-packages
STAMP := $(VENV)/.installed

.PHONY: run test check lint typecheck bench bench-check bench-download bench-serve bench-dns bench-import \
	bench-profile bench-fleet bench-rollout bench-pool setup clean sample fuzz \
	soak constraints wheelhouse

setup: $(STAMP)

$(STAMP_SYS): Makefile
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  policy=/usr/sbin/policy-rc.d; own_policy=""; \
	  if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$policy >/dev/null; \
	    $$SUDO chmod +x $$policy; own_policy=1; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	  status=$$?; [ -z "$$own_policy" ] || $$SUDO rm -f $$policy; \
	  [ $$status = 0 ] || exit $$status; \
	fi
	@mkdir -p $(VENV) && touch $@

# constraints.txt pins every package (runtime, test and their dependencies) to the versions
# tested; pyproject.toml keeps the floors. `make constraints` refreshes it (docs/security.md).
$(STAMP): pyproject.toml constraints.txt $(STAMP_SYS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	@touch $@

# resolve pyproject.toml afresh (the newest versions it allows) in a scratch venv and freeze
# that into constraints.txt; then `make test` and commit both
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install -q --upgrade pip
	.venv-constraints/bin/python -m pip install -q -e '.[test]'
	{ echo "# pip constraints: the versions make setup installs, as tested. Do not edit:"; \
	  echo "# make constraints regenerates it (Python $$(.venv-constraints/bin/python -c \
	    'import platform; print(platform.python_version())'), $$(date -u +%F))."; \
	  .venv-constraints/bin/python -m pip freeze --exclude-editable; } > constraints.txt
	rm -rf .venv-constraints

# A wheelhouse for sites without a package index (docs/deployment.md): the ucupdates wheel
# and a wheel of each dependency at its version in constraints.txt, for this machine's
# Python and architecture (the appliance's: Debian 12, Python 3.11); the role's
# ucupdates_appliance_wheelhouse points at it. Built from a copy of the source.
WHEELHOUSE ?= wheelhouse
wheelhouse: $(STAMP)
	rm -rf $(WHEELHOUSE)
	src=$$(mktemp -d) && cp -R pyproject.toml README.md appliance "$$src" && \
	SOURCE_DATE_EPOCH=315532800 $(PY) -m pip wheel -q -c constraints.txt \
	  --wheel-dir $(WHEELHOUSE) "$$src"; status=$$?; rm -rf "$$src"; exit $$status

UC := $(PY) -m appliance --data-dir $(DATA_DIR)

run: $(STAMP)
	$(UC) make-sample-package $(DATA_DIR)/sample/UCUpdates.cab --sample-check
	$(UC) import $(DATA_DIR)/sample/UCUpdates.cab
	@# the sample check's phone is a test device, so it is offered the pending version
	@$(UC) test-device list | grep -q 00-04-F2-00-00-01 || \
	  $(UC) test-device add "sample phone (make run)" --mac 00-04-F2-00-00-01
	$(UC) rules
	$(UC) serve

# the whole suite in three runs, each run whatever an earlier one found (the status is the
# worst): the fast tier, a test file per worker; the slow tier's tests marked `alone`
# (tests/conftest.py: they load the machine on purpose, or measure time) one at a time; the
# rest of the slow tier, a test file per worker on SLOW_WORKERS workers (its tests mostly
# wait on the processes and servers they start, so more workers than cores pays)
SLOW_WORKERS ?= 3
test: $(STAMP) lint
	@status=0; \
	$(PY) -m pytest -q -m "not slow" -n auto --maxprocesses 4 --dist loadfile || status=1; \
	$(PY) -m pytest -q -m "slow and alone" || status=1; \
	$(PY) -m pytest -q -m "slow and not alone" -n $(SLOW_WORKERS) --dist loadfile || status=1; \
	exit $$status

# the fast tier: lint, types and every test not marked slow (tests/conftest.py), in seconds,
# a test file per worker on up to 4 cores
check: $(STAMP) lint
	$(PY) -m pytest -q -m "not slow" -n auto --maxprocesses 4 --dist loadfile

# every fuzz target under atheris for FUZZ_SECONDS each (or FUZZ_RUNS inputs): inputs tried
# and crashes per target; crash inputs in test-artifacts/fuzz/<target>/ (docs/security.md)
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(PY) -m tests.fuzz.run $(if $(FUZZ_RUNS),--runs $(FUZZ_RUNS),--seconds $(FUZZ_SECONDS)) $(FUZZ_TARGETS)

lint: $(STAMP)
	$(VENV)/bin/ruff check appliance tests bench
	$(VENV)/bin/mypy

# benchmarks against the reference tools, interleaved on the same machine; each prints its
# table and writes bench/out/<name>.json (docs/benchmarks.md). `make bench` runs them all
# and prints one table of the results (about 10 minutes on 2 cores: bench-fleet, 4, has its own).
bench-check: $(STAMP)
	$(PY) bench/bench_checks.py

bench-download: $(STAMP)
	$(PY) bench/bench_downloads.py

bench-serve: bench-check bench-download

bench-dns: $(STAMP)
	$(PY) bench/bench_dns.py

bench-import: $(STAMP)
	$(PY) bench/bench_import.py

bench-profile: $(STAMP)
	$(PY) bench/bench_profile.py --tls10

# FLEET phones (10,000) in the morning storm, at FLEET/10 and 3*FLEET/10 too, and a rollout
# of FLEET/10 30 MiB downloads (about 5 minutes); figures in bench/out/fleet.json, the
# charts in docs/fleet-storm.svg and docs/fleet-rollout.svg (docs/benchmarks.md, Fleet)
FLEET ?= 10000
bench-fleet: $(STAMP)
	FLEET=$(FLEET) $(PY) bench/bench_fleet.py

# a staged approval (5 -> 25 -> 100 %) under 1,500 phones with an upgrade path and 1 %
# reverting, then serve with and without a rollout policy, A B A B (about 2 minutes);
# bench/out/rollout.json (docs/benchmarks.md, Rollouts)
bench-rollout: $(STAMP)
	$(PY) bench/bench_rollout.py

# pool mode: checks with the catalogue on PostgreSQL against SQLite, A B A B, and the time
# until two nodes on a PostgreSQL primary and a branch on its standby serve a 200 MB import
# (about 90 s); bench/out/pool.json (docs/benchmarks.md, Pool)
bench-pool: $(STAMP)
	$(PY) bench/bench_pool.py

bench: bench-check bench-download bench-dns bench-import bench-profile bench-fleet
	$(PY) bench/summary.py

# the appliance under a fleet's traffic for SOAK_SECONDS (bench/soak.py): fails on any error
# or when RSS or open descriptors grow after warm-up; report in bench/out/soak-*.json
SOAK_SECONDS ?= 3600
soak: $(STAMP)
	$(PY) bench/soak.py --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) .venv-constraints $(DATA_DIR) bench/out test-artifacts
