# netagent: `make run` and `make test` do everything on a fresh Debian node (as root).
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test bench deb clean cri-proto

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

# agent/enrich/cri_pb2.py is generated from cri.proto and committed (grpcio-tools is a test extra)
cri-proto: setup
	$(PY) -m grpc_tools.protoc -Iagent/enrich --python_out=agent/enrich agent/enrich/cri.proto

clean:
	rm -rf $(VENV) build dist *.egg-info bench/results/*.tmp
