"""mptcp-nvme series without a VM: what SERIES names (mbox, range, message id through b4
offline), bad input in one line and exit 2 before any build, a patch that does not apply
as a verdict of its own, the incremental copy-and-am build path (the build faked), and
the comparison and verdict on results.json files captured from real runs
(tests/data/series: the CI stand-in and it with a patch making nvmet reject
addr_trtype=tcp)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from mptcp_nvme.errors import SeriesRejected, SetupError, UsageError
from mptcp_nvme.host.series import build
from mptcp_nvme.host.series import compare
from mptcp_nvme.host.series import patches
from mptcp_nvme.host.series import verdict
from tests.unit.host.test_cli import assert_one_line, cli
import tests

DATA = tests.DATA / "series"
CONFIGFS = """static const struct nvmet_transport_name {
\tu8\t\ttype;
\tconst char\t*name;
} nvmet_transport[] = {
\t{ NVMF_TRTYPE_RDMA,\t"rdma" },
\t{ NVMF_TRTYPE_FC,\t"fc" },
\t{ NVMF_TRTYPE_TCP,\t"tcp" },
\t{ NVMF_TRTYPE_LOOP,\t"loop" },
};
"""


def git(tree, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.org",
           "GIT_AUTHOR_DATE": "2026-11-29T12:00:00Z", "GIT_COMMITTER_DATE": "2026-11-29T12:00:00Z"}
    return subprocess.run(["git", "-C", str(tree), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


def commit_file(tree, path, text, subject):
    (tree / path).parent.mkdir(parents=True, exist_ok=True)
    (tree / path).write_text(text)
    git(tree, "add", path)
    git(tree, "commit", "-q", "-m", subject, "-m", "Body of the change.")
    return git(tree, "rev-parse", "HEAD")


@pytest.fixture
def kernel(tmp_path):
    """A git 'kernel tree' (Kconfig, Makefile, nvmet's configfs.c) and, on the branch
    'series', the two patches of the issue: a harmless one and one that breaks nvmet."""
    tree = tmp_path / "linux"
    tree.mkdir()
    git(tree, "init", "-q", "-b", "master")
    (tree / "Kconfig").write_text("mainmenu \"Linux\"\n")
    (tree / "Makefile").write_text("all:\n")
    git(tree, "add", "Kconfig", "Makefile")
    commit_file(tree, "drivers/nvme/target/configfs.c", CONFIGFS, "base")
    git(tree, "checkout", "-q", "-b", "series")
    commit_file(tree, "Documentation/nvme/series.rst", "A harmless note.\n",
                "Documentation: nvme: a harmless note")
    commit_file(tree, "drivers/nvme/target/configfs.c",
                CONFIGFS.replace('\t{ NVMF_TRTYPE_TCP,\t"tcp" },\n', ""),
                "nvmet: reject addr_trtype=tcp")
    git(tree, "checkout", "-q", "master")
    return tree


def format_patch(tree, rng, out, *extra):
    out.write_text(git(tree, "format-patch", "--stdout", "--thread", *extra, rng) + "\n")
    return out


def test_an_mbox_is_its_patches_on_the_trees_head(kernel, tmp_path):
    mbox = format_patch(kernel, "master..series", tmp_path / "s.mbox", "--cover-letter")
    found = patches.resolve(str(mbox), kernel, tmp_path / "scratch")
    assert found.kind == "mbox" and found.base == git(kernel, "rev-parse", "master")
    assert [(p.index, p.total, p.subject) for p in found.patches] == [
        (1, 2, "Documentation: nvme: a harmless note"), (2, 2, "nvmet: reject addr_trtype=tcp")]
    patches.check_applies(found, tmp_path / "scratch")
    assert git(kernel, "status", "--porcelain") == ""        # TREE untouched


def test_a_range_is_its_commits_on_its_start(kernel, tmp_path):
    found = patches.resolve("master..series", kernel, tmp_path / "scratch")
    assert found.kind == "range" and found.base == git(kernel, "rev-parse", "master")
    assert [p.subject for p in found.patches] == ["Documentation: nvme: a harmless note",
                                                  "nvmet: reject addr_trtype=tcp"]
    assert len(patches.resolve("series~1..series", kernel, tmp_path / "s2").patches) == 1


def test_a_message_id_goes_through_b4_offline_with_a_local_mbox(kernel, tmp_path):
    mbox = format_patch(kernel, "master..series", tmp_path / "thread.mbox", "--cover-letter")
    cover = next(line for line in mbox.read_text().splitlines()
                 if line.lower().startswith("message-id:")).split("<")[1].rstrip(">")
    found = patches.resolve(f"<{cover}>", kernel, tmp_path / "scratch", local_mbox=mbox)
    assert found.kind == "msgid"
    assert [p.subject for p in found.patches] == ["Documentation: nvme: a harmless note",
                                                  "nvmet: reject addr_trtype=tcp"]
    with pytest.raises(UsageError, match="b4 found no patch series for nobody@example.org"):
        patches.resolve("nobody@example.org", kernel, tmp_path / "s2", local_mbox=mbox)


def test_message_ids_are_recognised():
    assert patches.message_id("<20261129.1@x.org>") == "20261129.1@x.org"
    assert patches.message_id("https://lore.kernel.org/all/20261129.1@x.org/") == "20261129.1@x.org"
    assert patches.message_id("not-a-series") is None


def test_a_patch_that_does_not_apply_is_named(kernel, tmp_path):
    mbox = format_patch(kernel, "master..series", tmp_path / "s.mbox")
    commit_file(kernel, "drivers/nvme/target/configfs.c", "/* rewritten */\n", "rewrite")
    found = patches.resolve(str(mbox), kernel, tmp_path / "scratch")
    with pytest.raises(SeriesRejected) as err:
        patches.check_applies(found, tmp_path / "scratch")
    assert str(err.value).startswith("patch 2/2 'nvmet: reject addr_trtype=tcp' does not apply: "
                                     "error: patch failed: drivers/nvme/target/configfs.c:"), err.value


def test_cli_verdict_of_a_series_that_does_not_apply(kernel, tmp_path):
    mbox = format_patch(kernel, "master..series", tmp_path / "s.mbox")
    commit_file(kernel, "drivers/nvme/target/configfs.c", "/* rewritten */\n", "rewrite")
    code, stdout, stderr = cli("series", str(mbox), "--base", str(kernel),
                               "--results-dir", str(tmp_path / "out"))
    assert code == 1, stderr
    first = stdout.splitlines()[0]
    assert first.startswith("# mptcp-nvme series: patch 2/2 'nvmet: reject addr_trtype=tcp' "
                            "does not apply: error: patch failed"), stdout
    assert (tmp_path / "out/summary.md").read_text() == stdout
    assert json.loads((tmp_path / "out/results.json").read_text())["exit"] == 1


@pytest.mark.parametrize("make, expected", [
    (lambda k, t: [str(t / "notes.txt"), "--base", str(k)], "not a patch series"),
    (lambda k, t: [str(t / "letter.mbox"), "--base", str(k)], "not a patch series (no mail in it has a diff)"),
    (lambda k, t: ["series..series", "--base", str(k)], "series..series: no commits in the range"),
    (lambda k, t: ["nosuch..series", "--base", str(k)], "nosuch: not a commit"),
    (lambda k, t: ["what-is-this", "--base", str(k)], "not an mbox file, a git range A..B or a message id"),
    (lambda k, t: ["master..series", "--base", str(t)], "not a kernel source tree"),
    (lambda k, t: ["master..series", "--base", str(t / "copy")], "not a git work tree"),
    (lambda k, t: ["master..series", "--base", str(k), "--frobnicate"], "unrecognized arguments"),
    (lambda k, t: ["master..series", "--base", str(k), "selftests/nosuch.py"], "no such selftest"),
    (lambda k, t: ["x@y.org", "--base", str(k), "--local-mbox", str(t / "none.mbox")], "no such file"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_build(kernel, tmp_path, make, expected):
    (tmp_path / "notes.txt").write_text("just some notes\n")
    (tmp_path / "letter.mbox").write_text("From x Mon Sep 17 00:00:00 2001\nFrom: a@b.c\n"
                                          "Subject: hello\n\nno patch here\n")
    (tmp_path / "copy").mkdir()
    for name in ("Kconfig", "Makefile"):
        (tmp_path / "copy" / name).write_text("\n")
    env = {**os.environ, "MPTCP_NVME_CACHE": str(tmp_path / "cache")}
    code, stdout, stderr = cli("series", *make(kernel, tmp_path), env=env)
    assert code == 2, stderr
    assert_one_line(stderr, expected)
    assert not (tmp_path / "cache/series").exists()


@pytest.fixture
def fake_build(monkeypatch, tmp_path):
    """kernel.build faked: 'builds' by writing bzImage, fails on a tree whose configfs.c
    lost tcp (as a compiler would on a broken patch), and records what it built."""
    monkeypatch.setenv("MPTCP_NVME_CACHE", str(tmp_path / "cache"))
    built = []

    def fake(tree, jobs=None, trim=False, log=None):
        Path(log).write_text("  CC      drivers/nvme/target/configfs.o\n")
        if '"tcp"' not in (tree / "drivers/nvme/target/configfs.c").read_text():
            raise SetupError(f"kernel build in {tree} failed: drivers/nvme/target/configfs.c:3:1: "
                             f"error: expected ';' (log: {log})")
        (tree / "arch/x86/boot").mkdir(parents=True, exist_ok=True)
        (tree / "arch/x86/boot/bzImage").write_text("image")
        built.append(tree)
    monkeypatch.setattr(build.kernel_mod, "build", fake)
    return built


def test_the_series_builds_in_a_copy_of_the_built_base_and_both_are_cached(kernel, tmp_path,
                                                                            fake_build):
    (kernel / "drivers/nvme/target/configfs.o").write_text("object")   # a build product
    os.utime(kernel / "drivers/nvme/target/configfs.c", (1_000_000_000, 1_000_000_000))
    found = patches.resolve("master..series~1", kernel, tmp_path / "scratch")
    base, cached = build.build_base(found, tmp_path / "base.log")
    assert not cached and base.parent.name.startswith(f"base-{found.base[:12]}-")
    assert (base / "drivers/nvme/target/configfs.o").read_text() == "object"
    assert (base / "drivers/nvme/target/configfs.c").stat().st_mtime == 1_000_000_000
    patched, cached = build.build_series(found, base, tmp_path / "series.log")
    assert not cached and patched.parent.name.startswith("series-")
    assert (patched / "Documentation/nvme/series.rst").is_file()
    assert (patched / "drivers/nvme/target/configfs.c").stat().st_mtime == 1_000_000_000
    assert git(patched, "log", "-1", "--format=%s") == "Documentation: nvme: a harmless note"
    assert not (base / "Documentation/nvme/series.rst").exists()
    assert fake_build == [base, patched]
    assert build.build_base(found, tmp_path / "base.log") == (base, True)
    assert build.build_series(found, base, tmp_path / "series.log") == (patched, True)
    assert git(kernel, "status", "--porcelain") == "?? drivers/nvme/target/configfs.o"


def test_a_series_that_does_not_build_names_the_error_and_leaves_no_tree(kernel, tmp_path,
                                                                         fake_build):
    found = patches.resolve("master..series", kernel, tmp_path / "scratch")
    base, _ = build.build_base(found, tmp_path / "base.log")
    with pytest.raises(SeriesRejected) as err:
        build.build_series(found, base, tmp_path / "series.log")
    assert str(err.value) == ("base+series does not build: drivers/nvme/target/configfs.c:3:1: "
                              f"error: expected ';' (log: {tmp_path / 'series.log'})")
    assert [p.name for p in (tmp_path / "cache/series").iterdir()] == [base.parent.name]


def run_doc(*tests):
    return {"tests": [{"nodeid": nodeid, "description": nodeid, "result": result,
                       "reason": None, "time_ms": 10, "artifacts": [], "flaky": False,
                       "crashes": [f"oops: BUG at x (fingerprint {fp})" for fp in crashes]}
                      for nodeid, result, *crashes in tests],
            "kernel": {"release": "7.3.4-virtme", "origin": "tree /k", "commit": None}}


def test_compare_sorts_every_change_and_matches_crashes_by_fingerprint():
    base = run_doc(("a", "pass"), ("b", "fail"), ("c", "fail"), ("d", "pass"), ("e", "skip"),
                   ("f", "pass"), ("g", "fail", "oops:nvmet_tcp_io_work"), ("gone", "pass"))
    series = run_doc(("a", "fail"), ("b", "pass"), ("c", "error"), ("d", "skip"), ("e", "fail"),
                     ("f", "pass", "oops:nvmet_tcp_io_work"), ("g", "fail", "oops:nvmet_tcp_io_work"),
                     ("new", "fail", "bug:nvmet_addr_trtype_store"))
    changes = compare.compare(base, series)
    assert changes == {"new_failures": ["a", "e", "new"], "fixed": ["b"], "still_failing": ["c", "g"],
                       "new_skips": ["d"], "not_run": ["gone"],
                       "new_crashes": [("new", "bug:nvmet_addr_trtype_store")],
                       "known_crashes": [("f", "oops:nvmet_tcp_io_work"),
                                         ("g", "oops:nvmet_tcp_io_work")]}
    assert compare.exit_code(changes) == 1
    assert verdict.headline(changes) == ("new failures: a, e, new; "
                                         "new crashes: bug:nvmet_addr_trtype_store")


def test_a_new_crash_alone_fails_the_series():
    changes = compare.compare(run_doc(("a", "pass")), run_doc(("a", "pass", "warning:x")))
    assert changes["new_crashes"] == [("a", "warning:x")] and compare.exit_code(changes) == 1


@pytest.fixture
def breaking(tmp_path):
    """The results folders of the VM test's breaking series (tests/data/series/breaking:
    the stand-in, and it with configfs rejecting addr_trtype=tcp), copied."""
    import shutil
    shutil.copytree(DATA / "breaking", tmp_path / "out")
    return tmp_path / "out"


def test_verdict_of_real_runs_names_the_tests_the_series_broke(breaking, tmp_path):
    runs = {name: json.loads((breaking / name / "results.json").read_text())
            for name in ("base", "series")}
    changes = compare.compare(runs["base"], runs["series"])
    modules = "selftests/test_modules.py::test_nvme_tcp_modules_load"
    connect = "selftests/test_datapath.py::test_connect[tcp-1path-loss0]"
    assert changes["new_failures"] == [connect, modules]         # by node id
    assert not any(changes[k] for k in ("fixed", "still_failing", "new_skips", "new_crashes"))
    mbox = tmp_path / "both.mbox"
    mbox.write_text("From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH 1/1] nvmet: reject "
                    "addr_trtype=tcp\n\n---\ndiff --git a/x b/x\n--- a/x\n+++ b/x\n")
    found = patches.Series("both.mbox", "mbox", Path("/k"), "ecf539427ae7" + "0" * 28,
                              patches.split_mbox(mbox, tmp_path / "scratch"))
    document = verdict.write(breaking, found, runs, changes, compare.exit_code(changes))
    text = (breaking / "summary.md").read_text()
    assert text.splitlines()[0] == f"# mptcp-nvme series: new failures: {connect}, {modules}"
    assert f"- `{connect}`: pass -> error (setup failed)" in text
    assert "- base: 7.3.4-virtme, commit ecf539427ae7: 2 pass" in text
    assert "- 1/1 nvmet: reject addr_trtype=tcp" in text and "(1 patch)" in text
    assert json.loads((breaking / "results.json").read_text()) == document
    assert [(t["nodeid"], t["base"]["result"], t["series"]["result"]) for t in document["tests"]] == [
        (modules, "pass", "fail"), (connect, "pass", "error")]
    import xml.etree.ElementTree as ET
    suites = ET.parse(breaking / "junit.xml").getroot()
    assert [s.get("name").split(":")[0] for s in suites] == ["base", "series"]
    from mptcp_nvme.host.results import kcidb
    report = kcidb.validate(json.loads((breaking / "kcidb.json").read_text()))
    assert len(report["checkouts"]) == 2 and len(report["builds"]) == 2
    assert sorted(t["status"] for t in report["tests"]) == ["ERROR", "FAIL", "PASS", "PASS"]


def test_the_least_recently_used_builds_beyond_keep_go(kernel, tmp_path, fake_build, monkeypatch):
    monkeypatch.setattr(build, "KEEP", {"base": 1, "series": 1})
    base, _ = build.build_base(patches.resolve("master..series~1", kernel, tmp_path / "a"),
                                    tmp_path / "base.log")
    first, _ = build.build_series(patches.resolve("master..series~1", kernel, tmp_path / "a"),
                                       base, tmp_path / "1.log")
    (kernel / "drivers/nvme/target/configfs.c").write_text('"tcp" still here\n')
    git(kernel, "commit", "-q", "-am", "another")
    homes = lambda kind: sorted(p.name for p in (tmp_path / "cache/series").glob(f"{kind}-*"))
    assert homes("series") == [first.parent.name]
    second_series = patches.resolve("master~1..master", kernel, tmp_path / "c")
    second_base, _ = build.build_base(second_series, tmp_path / "base2.log")
    second, _ = build.build_series(second_series, second_base, tmp_path / "2.log")
    assert homes("series") == [second.parent.name] and homes("base") == [second_base.parent.name]
