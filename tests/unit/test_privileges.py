"""Privilege refusals name who the process runs as, the right way round."""

import pytest

from netagent import privileges
from netagent.errors import InsufficientPrivilege


@pytest.mark.parametrize("euid, who", [(1000, "uid 1000"), (0, "root")])
def test_require_bpf_names_the_running_identity(monkeypatch, euid, who):
    monkeypatch.setattr(privileges.os, "geteuid", lambda: euid)
    monkeypatch.setattr(privileges, "effective_capabilities", lambda: set())
    with pytest.raises(InsufficientPrivilege) as info:
        privileges.require_bpf("attach the drop sensor")
    message = str(info.value)
    assert message == f"need root or CAP_BPF + CAP_PERFMON to attach the drop sensor (running as {who} without them)"


@pytest.mark.parametrize("euid, who", [(1000, "uid 1000"), (0, "root")])
def test_require_caps_names_the_running_identity(monkeypatch, euid, who):
    monkeypatch.setattr(privileges.os, "geteuid", lambda: euid)
    monkeypatch.setattr(privileges, "effective_capabilities", lambda: {"CAP_NET_RAW"})
    with pytest.raises(InsufficientPrivilege) as info:
        privileges.require_caps(["CAP_NET_RAW", "CAP_SYS_ADMIN"], "enter another network namespace")
    assert str(info.value) == ("need root or CAP_SYS_ADMIN to enter another network namespace "
                               f"(running as {who} without them)")
