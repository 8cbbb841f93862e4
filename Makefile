# Two commands: `make demo` and `make test`. Both build .venv on first use.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
# The collection is seen by ansible through a symlink: .venv/collections/ansible_collections/fne/offline_sync -> repo
COLLECTIONS := $(VENV)/collections
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PATH := $(VENV)/bin:$(PATH)
PYTEST_ARGS ?= -n 2
# uv installs the venvs (seconds where pip takes minutes: CI builds seven of them on a fresh machine)
UV_PIN := uv==0.9.9
UV := $(VENV)/bin/uv

.PHONY: venv cores test test-cores demo lint clean system-deps reliability bench bench-big-files FORCE
venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt tests/lab/pyproject.toml
	@python=$$(tools/find-python) && echo "using $$python" && $$python -m venv $(VENV)
	$(VENV)/bin/pip install -q $(UV_PIN)
	$(UV) pip install -q --python $(PY) -r requirements-dev.txt -e tests/lab
	mkdir -p $(COLLECTIONS)/ansible_collections/fne
	ln -sfn $(CURDIR) $(COLLECTIONS)/ansible_collections/fne/offline_sync
	-$(VENV)/bin/fnelab build-tools  # the stand-in vendor tools (Java); `fnelab up` builds them when this could not
	touch $@

# Every older ansible-core the collection supports (meta/runtime.yml, README), with the oldest Python each runs on
# as a controller: .venv/cores/X.Y holds that ansible-core, pytest and requests; the lab runs from .venv. The
# newest ansible-core is .venv's own (requirements-dev.txt) and gets the whole suite.
CORES := 2.16.19:3.11 2.17.14:3.11 2.18.19:3.11 2.19.14:3.13 2.20.10:3.12
CORE_VENVS := $(foreach core,$(CORES),$(VENV)/cores/$(basename $(firstword $(subst :, ,$(core)))))
# What runs on each older version (the newest runs everything; CI's time allows a few minutes each): both module
# execution paths (with the http backend; the tool backend's code is the same Python on every version), the README's ad-hoc commands and module_defaults play, the module_defaults
# groups, and one sync per topology through the sync playbook (remote: a whole cycle over SSH beside two failures).
CORE_TESTS := tests/integration/test_examples.py::test_readme_ad_hoc_and_module_defaults \
	'tests/integration/test_modules.py::test_full_cycle_both_paths[http]' \
	tests/integration/test_modules.py::test_module_defaults_lls_and_backoffice_groups \
	tests/integration/test_sync_api.py::test_status_changes_nothing \
	tests/integration/test_report.py::test_set_stats_totals_only \
	tests/integration/test_sync_remote.py::test_remote_upload_failure_shows_when_the_first_remote_host_is_unreachable
cores: $(addsuffix /.installed,$(CORE_VENVS))

# Rebuilt when requirements-cores.txt changes or CORES names another release for it (the stamp holds the spec).
$(VENV)/cores/%/.installed: tests/requirements-cores.txt FORCE
	@spec=$$(for c in $(CORES); do case $$c in $*.*) echo $$c;; esac; done) && \
	  if [ "$$(cat $@ 2>/dev/null)" != "$$spec" ] || [ $@ -ot tests/requirements-cores.txt ]; then \
	    python=$$(tools/find-python $${spec#*:}) && echo "ansible-core $${spec%:*} on $$python" && \
	    rm -rf $(VENV)/cores/$* && $(UV) venv -q --seed --python $$python $(VENV)/cores/$* && \
	    $(UV) pip install -q --python $(VENV)/cores/$*/bin/python "ansible-core==$${spec%:*}" \
	      -r tests/requirements-cores.txt && \
	    echo "$$spec" > $@; fi
FORCE:

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

test: system-deps venv test-cores
	$(VENV)/bin/ruff check plugins tests benchmarks tools
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# CORE_TESTS on each older ansible-core: pytest runs in that venv, so ansible-playbook, the modules' Python and
# ansible's own imports are that version's.
test-cores: venv system-deps cores
	@set -e; for core in $(CORE_VENVS); do echo "== $$($$core/bin/ansible --version | head -1) on $$($$core/bin/python -V)"; \
	  $$core/bin/python -m pytest $(PYTEST_ARGS) $(CORE_TESTS); done

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

# Peak memory of generate, upload and process for a 1 MiB and a 4 GiB sync file (benchmarks/big_files.py; needs
# about 9 GiB free in the temporary folder); BIG_FILES_ARGS="--sizes 1048576,1073741824" to choose.
BIG_FILES_ARGS ?=
bench-big-files: venv
	$(PY) benchmarks/big_files.py $(BIG_FILES_ARGS)
