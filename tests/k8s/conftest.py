"""Fixtures shared by the Kubernetes tests."""

import pytest


@pytest.fixture
def cri():
    """A FAKE CRI server (fake_cri.py) with no pods yet, on a socket of its own."""
    from fake_cri import FakeCriServer  # noqa: PLC0415 - grpc only for the tests that use it

    server = FakeCriServer().start()
    yield server
    server.close()
