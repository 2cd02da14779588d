import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import runsummary  # noqa: E402
from lab import Namespace  # noqa: E402
from timescale import TIME_SCALE  # noqa: E402
from vm.matrix import VM_MODULES  # noqa: E402

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def _mark_vm_matrix(items):
    """tests/kernel/ and the modules in tests/vm/matrix.py run in the VM matrix."""
    listed = {os.path.join(os.path.dirname(TESTS_DIR), m) for m in VM_MODULES}
    for item in items:
        path = str(item.fspath)
        if path.startswith(os.path.join(TESTS_DIR, "kernel") + os.sep) or path in listed:
            item.add_marker(pytest.mark.vm)


def _scale_timeouts(config, items):
    """pytest-timeout bounds stretched by NETAGENT_TIME_SCALE (set in VM guests)."""
    if TIME_SCALE == 1:
        return
    try:
        default = float(config.getini("timeout") or 0)
    except (ValueError, KeyError):
        default = 0.0
    for item in items:
        marker = item.get_closest_marker("timeout")
        seconds = (marker.args[0] if marker and marker.args else
                   marker.kwargs.get("timeout") if marker else default)
        if seconds:
            item.add_marker(pytest.mark.timeout(float(seconds) * TIME_SCALE), append=False)


def pytest_collection_modifyitems(config, items):
    _mark_vm_matrix(items)
    _scale_timeouts(config, items)
    # Tests under kernel/ and netns/ need root. CI runs as root, so there they
    # always run; a developer without root sees them skipped with the reason.
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (CI runs as root)")
    for item in items:
        if any(f"/{d}/" in str(item.fspath) for d in ("kernel", "netns", "node")):
            item.add_marker(skip)


def pytest_collection_finish(session):
    """tests/node/ is one Debian VM with systemd (4-8 min under TCG here): its session
    starts now, in the background, so the VM boots and runs while the host tests run
    (in `make test` they come before it); its tests wait for it. Only as root with a VM
    possible here; otherwise its tests skip or fail on their own as before."""
    node_dir = os.path.join(TESTS_DIR, "node") + os.sep
    if (os.geteuid() != 0 or session.config.option.collectonly
            or not any(str(item.fspath).startswith(node_dir) for item in session.items)):
        return
    from vm.guest_run import unavailable_reason  # noqa: PLC0415

    if unavailable_reason() is None:
        import tempfile  # noqa: PLC0415

        import nodesession  # noqa: PLC0415

        nodesession.start_in_background(tempfile.mkdtemp(prefix="netagent-node-session-"))


def pytest_sessionfinish(session):
    nodesession = sys.modules.get("nodesession")
    for background in getattr(nodesession, "BACKGROUND", []):
        background.close()  # an interrupted run leaves no VM behind, and no run leaves its files


@pytest.fixture
def netns_factory():
    """Create namespaces that are removed after the test, whatever happens."""
    made = []

    def make(name=None):
        ns = Namespace(name)
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        ns.delete()


@pytest.fixture
def netns(netns_factory):
    return netns_factory()


@pytest.fixture(scope="session")
def netagent_bin():
    """The installed console script, run as a real process."""
    path = shutil.which("netagent", path=os.path.join(sys.prefix, "bin"))
    assert path, "netagent console script not installed in the venv (run make setup)"
    return path


def pytest_terminal_summary(terminalreporter):
    for section, lines in runsummary.SECTIONS.items():
        terminalreporter.section(section)
        for line in lines:
            terminalreporter.write_line(line)
