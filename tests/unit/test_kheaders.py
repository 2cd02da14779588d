"""Kernel headers for BCC when /lib/modules is hidden (systemd's ProtectKernelModules=yes):
found under /usr/src by release, a split tree joined into one BCC can use."""

import os

from netagent import kheaders
from netagent.conntrack import module as ct_module

RELEASE = "6.1.0-99-amd64"


def debian_split(root):
    """A Debian-shaped pair: -amd64 (generated headers, a Makefile naming -common) and -common."""
    src = root / "usr" / "src"
    build, common = src / f"linux-headers-{RELEASE}", src / "linux-headers-6.1.0-99-common"
    for d in (build / "include" / "generated", build / "include" / "config", build / "arch" / "x86" / "include" / "generated",
              common / "include" / "linux", common / "include" / "uapi", common / "arch" / "x86" / "include" / "asm",
              common / "arch" / "arm64" / "include", common / "scripts"):
        d.mkdir(parents=True)
    (build / "Makefile").write_text(f"include {common}/Makefile\n")
    (common / "include" / "linux" / "kconfig.h").write_text("/* kconfig */\n")
    (build / "include" / "generated" / "autoconf.h").write_text("#define CONFIG_X 1\n")
    return src, build, common


def test_a_split_tree_under_usr_src_is_found_and_joined(tmp_path, monkeypatch):
    src, build, common = debian_split(tmp_path)
    status = kheaders.headers_status(RELEASE, modules_dir=str(tmp_path / "hidden"), src_dir=str(src))
    assert status.status == "exact" and status.outside_modules == (str(build), str(common))
    assert "not readable here" in status.describe()
    monkeypatch.setenv("NETAGENT_CACHE_DIR", str(tmp_path / "cache"))
    tree = kheaders.bcc_kernel_source(status)
    assert tree == str(tmp_path / "cache" / "kheaders" / RELEASE)
    # what BCC reads: kconfig.h from -common, the generated headers from -amd64, both arches' includes
    assert open(os.path.join(tree, "include", "linux", "kconfig.h")).read() == "/* kconfig */\n"
    assert open(os.path.join(tree, "include", "generated", "autoconf.h")).read() == "#define CONFIG_X 1\n"
    assert os.path.realpath(os.path.join(tree, "arch", "x86", "include", "asm")) == str(common / "arch" / "x86" / "include" / "asm")
    assert os.path.realpath(os.path.join(tree, "arch", "x86", "include", "generated")) == str(
        build / "arch" / "x86" / "include" / "generated")
    assert os.path.realpath(os.path.join(tree, "arch", "arm64")) == str(common / "arch" / "arm64")
    assert kheaders.bcc_kernel_source(status) == tree  # made once, then reused


def test_a_whole_tree_is_used_as_it_is_and_none_is_none(tmp_path):
    whole = tmp_path / "usr" / "src" / "kernels" / RELEASE
    (whole / "include" / "linux").mkdir(parents=True)
    (whole / "include" / "linux" / "kconfig.h").write_text("")
    status = kheaders.headers_status(RELEASE, modules_dir=str(tmp_path / "hidden"), src_dir=str(tmp_path / "usr" / "src"))
    assert kheaders.bcc_kernel_source(status) == str(whole)
    missing = kheaders.headers_status("9.9.9", modules_dir=str(tmp_path / "hidden"), src_dir=str(tmp_path / "usr" / "src"))
    assert missing.status == "none" and kheaders.bcc_kernel_source(missing) is None


def test_readable_lib_modules_leaves_bcc_alone(tmp_path):
    build = tmp_path / "lib" / "modules" / RELEASE / "build"
    (build / "include").mkdir(parents=True)
    status = kheaders.headers_status(RELEASE, modules_dir=str(tmp_path / "lib" / "modules"))
    assert status.status == "exact" and status.outside_modules is None
    assert kheaders.bcc_kernel_source(status) is None


def test_a_hidden_modules_tree_means_wait_for_nf_conntrack(tmp_path, monkeypatch):
    """ProtectKernelModules=yes shows the unit an empty /lib/modules: on a kernel that loads
    modules the sensor must wait for nf_conntrack, not give up; a modules.dep that can be read
    and does not list it means this kernel has none."""
    monkeypatch.setattr(ct_module, "STAT_PATH", str(tmp_path / "no-stat"))
    tree, proc_modules = tmp_path / "modules", tmp_path / "proc-modules"
    state = lambda: ct_module.module_state(RELEASE, sys_module=str(tmp_path / "sys"),  # noqa: E731
                                           modules_dir=str(tree), proc_modules=str(proc_modules))
    assert state() == ct_module.ABSENT  # a kernel without modules: nothing will load
    proc_modules.write_text("")  # a kernel that loads modules
    assert state() == ct_module.LOADABLE  # nothing under /lib/modules: hidden, so wait
    (tree / RELEASE).mkdir(parents=True)
    (tree / RELEASE / "modules.dep").write_text("kernel/net/sched/sch_fq.ko:\n")
    assert state() == ct_module.ABSENT
    (tree / RELEASE / "modules.dep").write_text("kernel/net/netfilter/nf_conntrack.ko.xz: kernel/lib/libcrc32c.ko\n")
    assert state() == ct_module.LOADABLE
