# netagent: `make run` and `make test` do everything on a fresh Debian node (as root).
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test bench deb clean

setup:
	@bash packaging/setup-node.sh

run: setup
	$(VENV)/bin/netagent run

test: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS)

bench: setup
	$(PY) bench/run_all.py

deb: setup
	bash packaging/build-deb.sh

clean:
	rm -rf $(VENV) build dist *.egg-info bench/results/*.tmp
