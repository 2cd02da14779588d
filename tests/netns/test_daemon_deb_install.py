"""The .deb installs into a clean Debian 12 root (debootstrap) and runs there.

packaging/deb-install-proof.sh does the work: debootstrap bookworm, apt-get
install of the package with its dependencies from the Debian mirror,
`netagent --version` and `netagent doctor` inside the chroot. It caches the
downloaded packages in /var/cache/netagent-proof: ~110 s on a fresh node,
~70 s after (docs/daemon.md).
"""

import os
import re
import shutil
import subprocess

import pytest

import netagent

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.timeout(900)
def test_deb_installs_into_a_clean_debian_root_and_runs(tmp_path):
    assert shutil.which("debootstrap"), "debootstrap missing: `make setup` installs it"
    build = subprocess.run(["bash", os.path.join(REPO, "packaging", "build-deb.sh"), str(tmp_path)],
                           capture_output=True, text=True, timeout=600, cwd=REPO)
    assert build.returncode == 0, build.stderr
    deb = build.stdout.strip().splitlines()[-1]
    r = subprocess.run(["bash", os.path.join(REPO, "packaging", "deb-install-proof.sh"), deb],
                       capture_output=True, text=True, timeout=840, cwd=REPO)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert f"installed: netagent {netagent.__version__} install ok installed" in out
    assert f"netagent, version {netagent.__version__}" in r.stdout
    # doctor ran to the end inside the clean root and reported on the drop sensor
    assert re.search(r"^\s+drops\s+", r.stdout, re.M), r.stdout
    assert "netagent doctor exit code in the clean root: " in out
    left = [line for line in subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True,
                                            text=True).stdout.splitlines() if "/netagent-proof." in line]
    assert not left, f"mounts left behind: {left}"
