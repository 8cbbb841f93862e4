# Two commands: `make demo` and `make test`. Both build .venv on first use.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
# The collection is seen by ansible through a symlink: .venv/collections/ansible_collections/fne/offline_sync -> repo
COLLECTIONS := $(VENV)/collections
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PATH := $(VENV)/bin:$(PATH)
PYTEST_ARGS ?= -n 2

.PHONY: venv test demo lint clean system-deps reliability bench
venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt tests/lab/pyproject.toml
	@python=$$(tools/find-python) && echo "using $$python" && $$python -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt -e tests/lab
	mkdir -p $(COLLECTIONS)/ansible_collections/fne
	ln -sfn $(CURDIR) $(COLLECTIONS)/ansible_collections/fne/offline_sync
	-$(VENV)/bin/fnelab build-tools  # the stand-in vendor tools (Java); `fnelab up` builds them when this could not
	touch $@

# sshd for the remote-topology tests (real SSH to this machine), a headless JDK for the stand-in vendor tools (Java
# programs, as the vendor's are), Chromium and its driver for the report's browser test. Needs root or all three
# already installed.
system-deps:
	@command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || { \
	  [ "$$(id -u)" = 0 ] || { echo "install openssh-server (sshd) for the remote-topology tests" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; }
	@command -v javac >/dev/null || [ -n "$$JAVA_HOME" -a -x "$$JAVA_HOME/bin/javac" ] || { \
	  [ "$$(id -u)" = 0 ] || { echo "install a JDK (default-jdk-headless) for the stand-in vendor tools" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jdk-headless >/dev/null; }
	@[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || { \
	  [ "$$(id -u)" = 0 ] || { echo "install chromium and chromium-driver for the report's browser test" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: system-deps venv
	$(VENV)/bin/ruff check plugins tests benchmarks tools
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# docs/reliability.md from one run of the robustness suites (crash, faults, hostile servers, bad input, secrets,
# fuzzing): each case records its figures, tools/reliability_report.py writes the document.
RELIABILITY_SUITES := tests/integration/test_robust_crash.py tests/integration/test_robust_faults.py \
	tests/integration/test_robust_input.py tests/integration/test_robust_secrets.py tests/unit/test_fuzz.py \
	tests/unit/test_client_hostile.py
reliability: venv system-deps
	rm -f $(VENV)/reliability.jsonl
	FNE_RELIABILITY_OUT=$(VENV)/reliability.jsonl $(VENV)/bin/pytest $(PYTEST_ARGS) $(RELIABILITY_SUITES)
	FNE_RELIABILITY_OUT=$(VENV)/reliability.jsonl $(PY) tools/reliability_report.py

# ruff, ansible-lint (production profile, .ansible-lint) and the changelog fragments.
lint: venv
	$(VENV)/bin/ruff check plugins tests benchmarks tools
	$(VENV)/bin/ansible-lint
	$(VENV)/bin/antsibull-changelog lint

demo: venv
	$(PY) tools/demo.py

clean:
	rm -rf $(VENV) build demo-lab

# The sync cycle against its builtin-only and no-Ansible contenders, side by side (benchmarks/bench.py);
# BENCH_ARGS="--sizes 10,100 --reps 2 --doc" to choose, --doc writes the figures into docs/performance.md.
BENCH_ARGS ?= --doc
bench: venv
	FNE_BENCH_MAKE=1 $(PY) benchmarks/bench.py $(BENCH_ARGS)
