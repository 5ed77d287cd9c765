"""The series machinery on the CI stand-in kernel (MPTCP_NVME_TEST_KERNEL, ./ci/mptcp-kernel),
driven end to end by the patchwork bot ('mptcp-nvme patchwork poll') against the
in-process patchwork (tests/support/patchwork_server.py): three series, one harmless (a
Documentation line), one that also breaks nvmet (configfs rejects addr_trtype=tcp) and
one touching none of our files. The harmless one gets pending then success; the breaking
one pending then fail naming the new failures: test_connect[tcp-1path...] (with
--expect-all-features a missing transport fails its setup) and test_modules (it asserts
that nvmet takes addr_trtype=tcp); the third no check at all; a second poll runs nothing.
On the way patchwork refuses the token (401), fails a series (500), garbles the events
and loses the project (404), and a poller is killed with a VM up: each a line, nothing
lost, the next poll resuming the killed run; chromium draws the pages the bot wrote.

The stand-in is a Debian linux-source tree, not git: its git base is a copy of the built
tree committed once (Debian's .gitignore ignores every top-level path; that rule is
dropped in the copy), cached next to the series' builds by the stand-in's cache key."""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mptcp_nvme.host.inputs.rootfs import cache_dir
from mptcp_nvme.host.results import pages
from mptcp_nvme.poll import wait_for
from tests.support.browser import assert_drawn, browser_in
from tests.support.patchwork_server import PatchworkServer

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


def mails(mbox):
    """[(subject without [PATCH ...], diff)] of a git format-patch mbox."""
    found = []
    for mail in re.split(r"^From [0-9a-f]{40} ", mbox, flags=re.M)[1:]:
        subject = re.search(r"^Subject: \[PATCH[^\]]*\] (.*)$", mail, re.M).group(1)
        diff = mail[mail.index("diff --git "):]
        found.append((subject, re.split(r"^-- \n", diff, flags=re.M)[0]))
    return found


def bot_config(folder, url, tree):
    path = folder / "bot.toml"
    path.write_text("\n".join([
        "[patchwork]", f'url = "{url}"', 'project = "linux-nvme"', 'token_env = "PW_TEST_TOKEN"',
        "[results]", f'dir = "{folder / "results"}"', 'url = "https://ci.example.org/mptcp-nvme"',
        '[trees."nvme-7.3"]', f'path = "{tree}"', 'branch = "HEAD"',
        "tests = [" + ", ".join(f'"{t}"' for t in SELECTION[:2]) + "]",
        "args = [" + ", ".join(f'"{a}"' for a in SELECTION[2:]) + "]", ""]))
    return path


def poll(config, token):
    started = time.monotonic()
    done = subprocess.run([*POLL, str(config)], capture_output=True, text=True, timeout=3600,
                          cwd=REPO, env={**os.environ, "PW_TEST_TOKEN": token})
    return done, started


POLL = [sys.executable, "-m", "mptcp_nvme.host.cli", "patchwork", "poll", "--config"]


def one_line(done, *words):
    """A pass that patchwork failed: exit 1 and one line on stderr, naming ``words``."""
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 1, (done.returncode, done.stderr[-3000:])
    assert lines[0].startswith("mptcp-nvme: ") and all(w in lines[0] for w in words), lines
    return lines[0]


def saved(results):
    """(cursor, {series id: status}) of the bot's state, read while no bot holds it."""
    with sqlite3.connect(results / "patchwork.sqlite") as db:
        cursor = db.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()
        series = dict(db.execute("SELECT id, status FROM series"))
    return (cursor[0] if cursor else None), series


def command(process):
    """A process's command line, '' once it has gone."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def kill_mid_run(config, token, server, patches, log):
    """A poll killed with SIGKILL (its whole process group: no handler runs, as when the
    machine goes down) once every one of ``patches`` has its pending check and a VM of the
    run is up; every process it started must be gone after. Its start time."""
    started = time.monotonic()
    with open(log, "w") as err:
        poller = subprocess.Popen([*POLL, str(config)], stdout=subprocess.DEVNULL, stderr=err,
                                  cwd=REPO, start_new_session=True,
                                  env={**os.environ, "PW_TEST_TOKEN": token})
    try:
        def running():
            if poller.poll() is not None:
                raise AssertionError(f"the poll ended ({poller.returncode}) before it was killed:"
                                     f" {log.read_text()[-3000:]}")
            if not all(server.checks.get(p["id"]) for p in patches):
                return None
            tree = psutil.Process(poller.pid).children(recursive=True)
            return tree if any("qemu-system" in command(c) for c in tree) else None
        family = wait_for(running, "the pending checks and a VM of the series' run", timeout=2400,
                          interval=0.2)
    finally:
        os.killpg(poller.pid, signal.SIGKILL)
        poller.wait(timeout=60)
    def left():
        alive = []
        for process in family:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.Error:
                pass
        return alive
    wait_for(lambda: not left(), "every process of the killed poll to exit", timeout=60)
    return started


@needs_kernel
def test_the_bot_judges_a_harmless_a_breaking_and_a_foreign_series(tmp_path):
    """Through patchwork failing (401, 500, garbled JSON, 404) and a poller killed mid-run:
    each failure is one line and loses neither the cursor nor a series; the next poll
    resumes the killed run; the pages render in chromium; a last poll runs nothing."""
    tree = git_base(KERNEL)
    harmless, both = make_patches(tree, tmp_path)
    token = "integration-token"
    results = tmp_path / "results"
    with PatchworkServer(token=token) as server:
        server.add_project("linux-nvme")
        good = server.add_series("linux-nvme", "nvme: a note on the selftests", 1,
                                 mails(harmless.read_text()))
        bad = server.add_series("linux-nvme", "nvmet: reject addr_trtype=tcp", 1,
                                mails(both.read_text()))
        foreign = server.add_series("linux-nvme", "net: elsewhere", 1, [(
            "net: a note elsewhere", "diff --git a/Documentation/networking/x.rst "
            "b/Documentation/networking/x.rst\nnew file mode 100644\n--- /dev/null\n"
            "+++ b/Documentation/networking/x.rst\n@@ -0,0 +1 @@\n+Not NVMe.\n")])
        config = bot_config(tmp_path, server.url, tree)
        api = "/api/1.3/"

        server.fail_next("/api/", 401)           # the token refused: nothing seen, nothing lost
        one_line(poll(config, token)[0], "401")
        assert saved(results) == (None, {}) and not server.checks

        # the harmless series' detail fails once (500): left for the next pass, the
        # breaking one runs and its poller is killed with a VM up
        server.fail_next(f"{api}series/{good['id']}/", 500)
        killed = kill_mid_run(config, token, server, bad["patches"], tmp_path / "killed.log")
        killed_log = (tmp_path / "killed.log").read_text()
        assert f"series {good['id']} 'nvme: a note on the selftests' v1: left for the next " \
               "pass" in killed_log and "500" in killed_log, killed_log[-3000:]
        pending_at = [t - killed for t, method, target in server.received if method == "POST"
                      and f"/patches/{bad['patches'][0]['id']}/checks/" in target]
        cursor, status = saved(results)
        assert cursor and status == {good["id"]: "new", bad["id"]: "running",
                                     foreign["id"]: "new"}, status

        server.fail_next(f"{api}events/", "garbled")
        one_line(poll(config, token)[0], "events", "JSON")
        server.fail_next(f"{api}projects/", 404)
        one_line(poll(config, token)[0], "linux-nvme' does not exist")
        assert saved(results) == (cursor, status)

        first, started = poll(config, token)     # resumes: no event is new, all three decided
        assert first.returncode == 0, first.stderr[-5000:]
        assert not re.search(r"^patchwork: series .* v1: new$", first.stderr, re.M), \
            first.stderr[-3000:]
        assert f"series {bad['id']} 'nvmet: reject addr_trtype=tcp' v1: its run was " \
               "interrupted: running it again" in first.stderr, first.stderr[-3000:]
        states = {s["id"]: [[c["state"] for c in server.checks.get(p["id"], [])]
                            for p in s["patches"]] for s in (good, bad, foreign)}
        assert states == {good["id"]: [["pending", "success"]],
                          bad["id"]: [["pending", "pending", "fail"]] * 2,
                          foreign["id"]: [[]]}, states
        fail = server.checks[bad["patches"][0]["id"]][-1]
        assert re.fullmatch(r"new failure: test_connect\[tcp-1path.*\] \(error: setup failed\), "
                            r"test_nvme_tcp_modules_load", fail["description"]), fail
        assert fail["target_url"] == f"https://ci.example.org/mptcp-nvme/series-{bad['id']}-v1/"
        assert token not in first.stderr + killed_log
        assert f"series {foreign['id']} 'net: elsewhere' v1: not ours" in first.stderr
        posts = [(t, target) for t, method, target in server.received if method == "POST"]
        latency = {name: [t - started for t, target in posts if t >= started and
                          f"/patches/{s['patches'][0]['id']}/checks/" in target]
                   for name, s in (("harmless", good), ("breaking", bad))}
        latency["breaking, first seen"] = pending_at[:1]
        (tmp_path.parent / "bot-latency.json").write_text(json.dumps(latency))

        verdict = json.loads((results / f"series-{bad['id']}-v1/results.json").read_text())
        connect, modules = verdict["changes"]["new_failures"]      # by node id
        assert modules == "selftests/test_modules.py::test_nvme_tcp_modules_load"
        assert connect.startswith("selftests/test_datapath.py::test_connect[tcp-1path"), connect
        assert not verdict["changes"]["fixed"] and not verdict["changes"]["still_failing"]
        folder = results / f"series-{bad['id']}-v1"
        assert "addr_trtype=tcp (EINVAL)" in (folder / "series/ktap.txt").read_text()
        assert "series: the base build is cached" in first.stderr, first.stderr[-3000:]
        good_verdict = json.loads((results / f"series-{good['id']}-v1/results.json").read_text())
        assert good_verdict["verdict"] == "no new failures" and len(good_verdict["tests"]) == 2
        for name in ("summary.md", "junit.xml", "kcidb.json", "base/results.json",
                     "series/results.json", "base/ktap.txt", "series/ktap.txt"):
            assert (results / f"series-{good['id']}-v1" / name).is_file(), name

        browser = browser_in(tmp_path / "chromium")       # the pages this run wrote, drawn
        page = browser.dom(folder / "index.html")
        assert f"new failures: {connect}, {modules}" in page.by_id["verdict"], \
            page.by_id["verdict"]
        assert page.by_id["check"].startswith("patchwork check mptcp-nvme: fail new failure: "
                                              "test_connect[tcp-1path"), page.by_id["check"]
        changed = [(cls, cells[1].split()[0], cells[2].split()[0])
                   for cls, cells in page.tables["results"][1:]]
        assert changed[:2] == [("changed new", "pass", "error"),      # connect, then modules
                               ("changed new", "pass", "fail")], changed
        assert "series/junit.xml" in page.links and "script" not in page.tags
        assert_drawn(browser.screenshot(folder / "index.html", tmp_path / "page.png"),
                     {pages.COLOURS["fail"]: 50_000})
        index = browser.dom(results / "index.html")
        assert index.by_id["counts"] == "2 series: 1 success, 1 fail", index.by_id["counts"]
        assert index.links == [f"series-{bad['id']}-v1/index.html",    # newest first
                               f"{server.url}/project/linux-nvme/list/?series={bad['id']}",
                               f"series-{good['id']}-v1/index.html",
                               f"{server.url}/project/linux-nvme/list/?series={good['id']}"], \
            index.links

        posted = sum(len(c) for c in server.checks.values())    # 1 + 2 patches: 2 + 2 x 3
        assert posted == 8
        again, _ = poll(config, token)              # nothing new: nothing runs, nothing posted
        assert again.returncode == 0, again.stderr
        assert sum(len(c) for c in server.checks.values()) == posted
    print(f"pending after {latency['harmless'][0]:.1f} s (breaking, first seen: "
          f"{pending_at[0]:.1f} s); final: harmless {latency['harmless'][-1]:.0f} s, "
          f"breaking {latency['breaking'][-1]:.0f} s after the poll started")
