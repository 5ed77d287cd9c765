"""ci/mptcp-kernel's pieces (mptcp_nvme/host/inputs/standin.py) and the build log, without a build."""

import io
import re
import subprocess
import tarfile

import pytest

from mptcp_nvme.host.inputs import kernel, standin
from mptcp_nvme.errors import SetupError



def test_the_patch_says_it_is_a_stand_in_and_touches_only_nvme():
    text = standin.PATCH.read_text()
    assert "CI STAND-IN, NOT the \"NVMe over MPTCP\" series" in text
    files = [line.split()[1] for line in text.splitlines() if line.startswith("+++ ")]
    assert files == ["b/include/linux/nvme.h", "b/include/linux/nvme-tcp.h",
                     "b/drivers/nvme/host/tcp.c", "b/drivers/nvme/target/configfs.c",
                     "b/drivers/nvme/target/tcp.c"]
    added = [l for l in text.splitlines() if l.startswith("+") and not l.startswith("+++")]
    assert 100 <= len(added) <= 250
    # no new tcp_sock helper call: the only ones among added lines are the TCP branch's
    # own, re-indented under 'else', and a comment that forbids them
    removed = {l[1:].strip() for l in text.splitlines() if l.startswith("-") and not l.startswith("---")}
    calls = [l[1:].strip() for l in added if re.search(r"\btcp_sock_set_", l)
             and not l[1:].strip().startswith("*")]
    assert calls and all(call in removed for call in calls), calls


def test_cache_key_follows_version_patch_and_fragments(tmp_path):
    patch = tmp_path / "p.patch"
    patch.write_text("one")
    fragment = tmp_path / "f.config"
    fragment.write_text("CONFIG_A=y\n")
    key = standin.cache_key("7.3.4-1", patch, [fragment])
    assert key == standin.cache_key("7.3.4-1", patch, [fragment])
    assert key != standin.cache_key("7.3.5-1", patch, [fragment])
    patch.write_text("two")
    changed_patch = standin.cache_key("7.3.4-1", patch, [fragment])
    fragment.write_text("CONFIG_A=m\n")
    assert len({key, changed_patch, standin.cache_key("7.3.4-1", patch, [fragment])}) == 3


def fake_source_deb(tmp_path, files):
    """A .deb shaped like linux-source-7.3: usr/src/linux-source-7.3.tar.xz."""
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        "Package: linux-source-7.3\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\n"
        "Description: test\n")
    (root / "usr/src").mkdir(parents=True)
    with tarfile.open(root / "usr/src/linux-source-7.3.tar.xz", "w:xz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"linux-source-7.3/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    deb = tmp_path / "linux-source-7.3_1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def test_source_unpacks_and_a_patch_that_does_not_apply_names_the_file(tmp_path):
    deb = fake_source_deb(tmp_path, {"Kconfig": "# test\n", "drivers/nvme/host/tcp.c": "int x;\n"})
    tree = standin.extract_source(deb, tmp_path / "out")
    assert (tree / "Kconfig").read_text() == "# test\n"
    log = tmp_path / "build.log"
    with pytest.raises(SetupError, match=r"mptcp-standin.patch does not apply to "
                                         r"linux-source-7.3: can.t find file to patch .*\(log: .*build.log\)"):
        standin.apply_patch(tree, log=log)
    assert (tree / "drivers/nvme/host/tcp.c").read_text() == "int x;\n"   # dry run first
    assert "--dry-run" in log.read_text()


def test_a_failed_build_leaves_no_tree_in_the_cache(tmp_path, monkeypatch, capsys):
    """Patch applies (an empty one), the build fails: exit 1 with the first error and
    the log, and the cache has no half-built tree."""
    deb = fake_source_deb(tmp_path, {"Kconfig": "# test\n", "Makefile": "all:\n\tfalse\n"})
    monkeypatch.setenv("MPTCP_NVME_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(standin.Apt, "update", lambda self, force=False: None)
    monkeypatch.setattr(standin.Apt, "candidate", lambda self, package: "1")
    monkeypatch.setattr(standin.Apt, "download", lambda self, package, version, folder: deb)
    empty = tmp_path / "empty.patch"
    empty.write_text("")
    monkeypatch.setattr(standin, "apply_patch", lambda tree, log=None: None)

    def failing_build(tree, debug=False, jobs=None, trim=False, log=None):
        raise SetupError(f"kernel build in {tree} failed: x.c:1:2: error: boom (log: {log})")
    monkeypatch.setattr(standin.kernel_mod, "build", failing_build)
    assert standin.main([]) == 1
    err = capsys.readouterr().err
    assert "error: boom" in err and "log:" in err
    assert not list((tmp_path / "cache/kernels").glob("mptcp-standin-*/"))


@pytest.mark.parametrize("lines, first", [
    (["  CC  a.o", "make[2]: *** [x] Error 1", "a.c:3:5: error: 'x' undeclared"],
     "a.c:3:5: error: 'x' undeclared"),
    (["  CC  error.o", "make: *** No rule to make target 'foo'.  Stop."],
     "make: *** No rule to make target 'foo'.  Stop."),
    (["all good"], None),
])
def test_first_error_prefers_the_compiler(lines, first):
    assert kernel.first_error(lines) == first


def test_logged_build_step_failure_names_error_and_log(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Makefile").write_text("all:\n\t@echo '  CC      x.o'\n\t@echo 'x.c:1:1: error: nope'\n"
                                    "\t@false\n")
    run = kernel.LoggedBuild(tree, tmp_path / "logs/build.log")
    with pytest.raises(SetupError, match=r"x.c:1:1: error: nope \(log: .*build.log\)"):
        run(["make", "-s"])
    assert "x.c:1:1: error: nope" in (tmp_path / "logs/build.log").read_text()


def test_the_debug_kernel_has_a_key_of_its_own_and_the_normal_one_keeps_its_own(tmp_path):
    patch = tmp_path / "p.patch"
    patch.write_text("diff\n")
    normal = standin.cache_key("7.3.4-1", patch)
    assert normal == standin.cache_key("7.3.4-1", patch, kernel.fragments(trim=True))
    debug = standin.cache_key("7.3.4-1", patch, kernel.fragments(debug=True, trim=True))
    assert debug != normal
