# Two commands for a newcomer: `make demo` and `make test` (both as root).
PY := .venv/bin/python
PREFIX ?= lab
CLIENTS ?= 3

.PHONY: setup demo test test-unit lab-up lab-down lab-status clean image image-lock image-test fuzz

setup:
	@./image/host-setup.sh

demo: setup
	@$(PY) manage.py demo --prefix $(PREFIX) --clients $(CLIENTS)

test: setup
	@$(PY) -m pytest tests

test-unit: setup
	@$(PY) -m pytest tests/unit

lab-up: setup
	@$(PY) manage.py lab up --prefix $(PREFIX) --clients $(CLIENTS)

lab-down: setup
	@$(PY) manage.py lab down --prefix $(PREFIX)

lab-status: setup
	@$(PY) manage.py lab status --prefix $(PREFIX)

# The flashable OS image (root; installs its own build tools): build/image/.
image:
	@/usr/bin/python3 image/build.py

image-lock:
	@/usr/bin/python3 image/build.py --lock

image-test: setup image
	@IMAGE_TEST=1 $(PY) -m pytest -s tests/image

# Coverage-guided fuzzing (atheris) of the parsers of untrusted input; a long
# run by hand, not CI (CI replays fuzz/corpus in tests/unit/fuzz). Fewer:
# `make fuzz FUZZ_RUNS=100000 FUZZ_TIME=300 FUZZ_TARGETS="dns_query flow"`.
FUZZ_RUNS ?= 1000000
FUZZ_TIME ?= 1800
FUZZ_TARGETS ?=
fuzz: setup
	@$(PY) fuzz/run.py --runs $(FUZZ_RUNS) --max-time $(FUZZ_TIME) $(FUZZ_TARGETS)
