import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from lab import Namespace  # noqa: E402


def pytest_collection_modifyitems(config, items):
    # Tests under kernel/ and netns/ need root. CI runs as root, so there they
    # always run; a developer without root sees them skipped with the reason.
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (CI runs as root)")
    for item in items:
        if "/kernel/" in str(item.fspath) or "/netns/" in str(item.fspath):
            item.add_marker(skip)


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
