"""mptcp-nvme series on the CI stand-in kernel (MPTCP_NVME_TEST_KERNEL, ./ci/mptcp-kernel):
a two-patch series made here, one harmless (a Documentation line), one that breaks
nvmet (configfs rejects addr_trtype=tcp). The harmless patch alone gives "no new
failures", exit 0; with the breaking one the tcp connect test is named a new failure,
exit 1: test_connect[tcp-1path...] (with --expect-all-features a missing transport fails
its setup) and test_modules (it asserts that nvmet takes addr_trtype=tcp).

The stand-in is a Debian linux-source tree, not git: its git base is a copy of the built
tree committed once (Debian's .gitignore ignores every top-level path; that rule is
dropped in the copy), cached next to the series' builds by the stand-in's cache key."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mptcp_nvme.host.inputs.rootfs import cache_dir

from .conftest import REPO

pytestmark = pytest.mark.vm

KERNEL = os.environ.get("MPTCP_NVME_TEST_KERNEL")
needs_kernel = pytest.mark.skipif(
    not KERNEL, reason="MPTCP_NVME_TEST_KERNEL is not set (./ci/test sets it to the tree "
                       "that ./ci/mptcp-kernel prints)")
GIT_BASE_STAMP = ".mptcp-nvme-git-base"
IDENTITY = ["-c", "user.name=mptcp-nvme test", "-c", "user.email=test@mptcp-nvme"]
SELECTION = [REPO / "selftests/test_modules.py", REPO / "selftests/test_datapath.py::test_connect",
             "--trtype", "tcp", "--paths", "1", "--iopolicy", "numa", "--backing", "loop",
             "--expect-all-features"]


# fixed dates: the same patches every run, so their builds come from the cache
DATES = {"GIT_AUTHOR_DATE": "2026-11-29T12:00:00Z", "GIT_COMMITTER_DATE": "2026-11-29T12:00:00Z"}


def git(tree, *args):
    return subprocess.run(["git", "-C", str(tree), *IDENTITY, *args], check=True,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **DATES}).stdout


def git_base(kernel):
    """The built stand-in as a git tree: copied (mtimes kept) and committed once."""
    home = cache_dir() / "series" / f"standin-git-{Path(kernel).parent.name.rpartition('-')[2]}"
    tree = home / Path(kernel).name
    if (home / GIT_BASE_STAMP).is_file():
        return tree
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(kernel), str(tree)], check=True, timeout=1800)
    ignore = tree / ".gitignore"
    ignore.write_text(re.sub(r"#\n# Debian packaging.*", "", ignore.read_text(), flags=re.S))
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "linux-source-7.3 with the mptcp stand-in")
    (home / GIT_BASE_STAMP).write_text(f"{kernel}\n")
    return tree


def make_patches(tree, scratch):
    """[harmless.mbox, both.mbox]: commits on a scratch branch of a sparse shared clone
    (TREE itself is not touched), exported with git format-patch."""
    clone = scratch / "clone"
    subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(tree), str(clone)],
                   check=True, timeout=600)
    git(clone, "sparse-checkout", "set", "--no-cone", "/Documentation/nvme/",
        "/drivers/nvme/target/configfs.c")
    git(clone, "checkout", "-q", "-b", "scratch")
    index = clone / "Documentation/nvme/index.rst"
    index.write_text(index.read_text() + "\n.. The NVMe over MPTCP selftests run under virtme-ng.\n")
    git(clone, "commit", "-q", "-a", "-m", "Documentation: nvme: a note on the selftests")
    configfs = clone / "drivers/nvme/target/configfs.c"
    text = configfs.read_text()
    assert '\t{ NVMF_TRTYPE_TCP,\t"tcp" },\n' in text
    configfs.write_text(text.replace('\t{ NVMF_TRTYPE_TCP,\t"tcp" },\n', "", 1))
    git(clone, "commit", "-q", "-a", "-m", "nvmet: reject addr_trtype=tcp")
    harmless, both = scratch / "harmless.mbox", scratch / "both.mbox"
    harmless.write_text(git(clone, "format-patch", "--stdout", "HEAD~2..HEAD~1"))
    both.write_text(git(clone, "format-patch", "--stdout", "HEAD~2..HEAD"))
    return harmless, both


@needs_kernel
def test_a_harmless_patch_and_one_breaking_nvmet_tcp(mptcp_nvme, tmp_path):
    tree = git_base(KERNEL)
    harmless, both = make_patches(tree, tmp_path)

    good = mptcp_nvme("series", harmless, "--base", tree, *SELECTION,
                      "--results-dir", tmp_path / "harmless", timeout=1800)
    good.results_dir = tmp_path / "harmless"
    assert good.code == 0, good.stdout + good.stderr[-5000:]
    assert good.stdout.startswith("# mptcp-nvme series: no new failures\n"), good.stdout
    verdict = json.loads((good.results_dir / "results.json").read_text())
    assert verdict["verdict"] == "no new failures" and verdict["exit"] == 0
    assert len(verdict["tests"]) == 2 and all(
        t["base"]["result"] == t["series"]["result"] == "pass" for t in verdict["tests"])
    for name in ("summary.md", "junit.xml", "kcidb.json", "base/results.json",
                 "series/results.json", "base/ktap.txt", "series/ktap.txt"):
        assert (good.results_dir / name).is_file(), name
    kcidb = json.loads((good.results_dir / "kcidb.json").read_text())
    assert len(kcidb["checkouts"]) == 2 and len(kcidb["builds"]) == 2
    assert len(kcidb["tests"]) == 4
    good_seconds = good.seconds

    bad = mptcp_nvme("series", both, "--base", tree, *SELECTION,
                     "--results-dir", tmp_path / "both", timeout=1800)
    bad.results_dir = tmp_path / "both"
    assert bad.code == 1, bad.stdout + bad.stderr[-5000:]
    verdict = json.loads((bad.results_dir / "results.json").read_text())
    modules, connect = verdict["changes"]["new_failures"]
    assert modules == "selftests/test_modules.py::test_nvme_tcp_modules_load"
    assert connect.startswith("selftests/test_datapath.py::test_connect[tcp-1path"), connect
    assert bad.stdout.splitlines()[0] == (f"# mptcp-nvme series: new failures: {modules}, "
                                          f"{connect}"), bad.stdout
    assert "addr_trtype=tcp (EINVAL)" in (bad.results_dir / "series/ktap.txt").read_text()
    assert not verdict["changes"]["fixed"] and not verdict["changes"]["still_failing"]
    assert "series: the base build is cached" in bad.stderr, bad.stderr[-3000:]
    print(f"harmless: {good_seconds:.0f}s, breaking: {bad.seconds:.0f}s")
