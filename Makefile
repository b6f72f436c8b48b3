# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint wheel venv system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The real-kernel tests need conntrack, nft, ip and ss (and tmux to drive a terminal); the exporter's tests run the real promtool,
# prometheus and node_exporter. Install them when missing (services are not started: policy-rc.d).
system-deps:
	@missing=""; \
	for t in conntrack:conntrack nft:nftables ip:iproute2 ss:iproute2 openssl:openssl tmux:tmux promtool:prometheus \
	         prometheus:prometheus prometheus-node-exporter:prometheus-node-exporter \
	         amtool:prometheus-alertmanager; do \
	  cmd=$${t%%:*}; pkg=$${t##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    own_policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1; fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $$(echo $$missing | tr ' ' '\n' | sort -u) >/dev/null; rc=$$?; \
	    [ -n "$$own_policy" ] && rm -f /usr/sbin/policy-rc.d; [ $$rc = 0 ] || exit $$rc; \
	  else \
	    echo "missing:$$missing (real-kernel tests will be skipped)"; \
	  fi; \
	fi

# The doctor exits 0-3 like a Nagios plugin (OK/WARNING/CRITICAL/UNKNOWN): all of them are a
# successful run of `make run`; anything else is a real failure.
run: $(STAMP)
	@$(VENV)/bin/ctdoctor; code=$$?; [ $$code -le 3 ] || exit $$code

# Static checks first (ruff's rules and mypy's settings are in pyproject.toml), then the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

# In-process unit and build tests on two workers; the real-kernel tests one at a time (namespaces,
# host-wide counters, the session's host check).
test: $(STAMP) system-deps lint
	$(PY) -m pytest -q -n 2 tests/unit tests/build
	$(PY) -m pytest -q tests/integration

# A binary wheel with the C scanner, for hosts without a compiler (same Python version and arch).
wheel: $(STAMP)
	$(PY) -m pip wheel --no-deps -q -w dist .
	@ls dist/*.whl

bench: $(STAMP) system-deps
	$(PY) bench/top.py
	$(PY) bench/exporter.py
	$(PY) bench/flush.py
	$(PY) bench/namespaces.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
