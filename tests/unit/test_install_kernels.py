"""packaging/vm/install-kernels.sh on a fresh machine, against stand-in dpkg/apt tools.

A fresh machine has no linux-image-* package at all: dpkg-query matches
nothing and exits 1. Under `set -o pipefail` that once ended the script (and
`make setup` with it) without a word, before any kernel was installed.
"""

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "packaging" / "vm" / "install-kernels.sh"
RELEASES = {"6.1": "6.1.0-57-amd64", "6.12": "6.12.117+deb12-amd64"}


def fake_tools(bin_dir: Path, installed: set[str]) -> Path:
    """dpkg-query knows only `installed`; apt-cache names one release per series; apt-get logs."""
    log = bin_dir / "apt-get.log"
    listing = "".join(f"{p}\\n" for p in sorted(installed))
    tools = {
        "dpkg-query": f"""#!/bin/bash
# -W -f=FORMAT PATTERN: ${{Status}} for one package, ${{Package}} for a glob
installed=$'{listing}'
pattern=${{@: -1}}
if [[ $2 == *Status* ]]; then
  grep -qx -- "$pattern" <<<"$installed" && {{ printf 'install ok installed'; exit 0; }}
  echo "dpkg-query: no packages found matching $pattern" >&2; exit 1
fi
out=$(grep -E '^linux-image-.*-amd64$' <<<"$installed")
[[ -n $out ]] || {{ echo "dpkg-query: no packages found matching $pattern" >&2; exit 1; }}
echo "$out"
""",
        "apt-cache": f"""#!/bin/bash
case $2 in
  linux-image-amd64) printf '%s\\n  Depends: linux-image-{RELEASES["6.1"]}\\n' "$2" ;;
  linux-image-6.12-amd64) printf '%s\\n  Depends: linux-image-{RELEASES["6.12"]}\\n' "$2" ;;
esac
""",
        "apt-get": f'#!/bin/bash\necho "$@" >> {log}\n',
        "id": "#!/bin/bash\necho 0\n",  # as root, which the script needs to install
    }
    for name, text in tools.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return log


def run_script(tmp_path: Path, installed: set[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = fake_tools(tmp_path, installed)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "NETAGENT_VM_KERNELS": "install"}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    asked = log.read_text().split() if log.exists() else []
    return proc, [a for a in asked if a.startswith("linux-")]


def both(kind: str) -> set[str]:
    return {f"linux-{kind}-{rel}" for rel in RELEASES.values()}


def test_fresh_machine_installs_both_kernels_and_their_headers(tmp_path):
    proc, asked = run_script(tmp_path, installed=set())
    assert proc.returncode == 0, proc.stderr
    assert set(asked) == both("image") | both("headers")
    assert "installing VM kernels" in proc.stderr


def test_an_image_without_its_headers_is_completed(tmp_path):
    proc, asked = run_script(tmp_path, installed={f"linux-image-{RELEASES['6.12']}"})
    assert proc.returncode == 0, proc.stderr
    assert set(asked) == both("image") | both("headers")


def test_installed_pairs_install_nothing(tmp_path):
    proc, asked = run_script(tmp_path, installed=both("image") | both("headers"))
    assert proc.returncode == 0, proc.stderr
    assert asked == []
    for series, rel in RELEASES.items():
        assert f"VM kernel {series}: {rel} (image and headers installed)" in proc.stderr
