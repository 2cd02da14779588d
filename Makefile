# netagent: `make run` and `make test` do everything on a fresh Debian node (as root).
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test test-node bench soak deb image clean cri-proto

setup:
	@bash packaging/setup-node.sh

run: setup
	$(VENV)/bin/netagent run

test: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS)

# The kernel-dependent tests inside a VM on each Debian kernel (6.1, 6.12), both
# at once: the full matrix. `make test` runs its core selection (tests/vm/matrix.py
# CORE, tests/vm/test_kernel_matrix.py); docs/kernels.md.
test-kernels: setup
	$(PY) -m pytest -ra tests/vm/kernel_matrix.py $(PYTEST_ARGS)

# netagent as a user runs it: the .deb installed by apt on a Debian 12 VM with
# systemd as PID 1, one boot, every check (tests/node, docs/daemon.md "The node").
test-node: setup
	$(PY) -m pytest -ra tests/node $(PYTEST_ARGS)

bench: setup
	$(PY) bench/run_all.py

# 10 minutes of faults at once (drop storm, collector outages, SIGHUPs, full spool disk);
# figures in bench/results/soak.json. `make test` runs a 2-minute version (tests/netns/test_soak.py).
soak: setup
	$(PY) bench/soak.py --duration 600

deb: setup
	bash packaging/build-deb.sh

# OCI image localhost/netagent:VERSION from a debootstrap root + the .deb; no base
# image pulled (packaging/image/build-image.sh, docs/kubernetes.md)
image: setup
	bash packaging/image/build-image.sh

# agent/enrich/cri_pb2.py is generated from cri.proto and committed (grpcio-tools is a test extra)
cri-proto: setup
	$(PY) -m grpc_tools.protoc -Iagent/enrich --python_out=agent/enrich agent/enrich/cri.proto

clean:
	rm -rf $(VENV) build dist *.egg-info bench/results/*.tmp
