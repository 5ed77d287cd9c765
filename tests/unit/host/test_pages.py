"""The results pages (host/results/pages.py) opened in a real headless browser, Debian's
chromium: the series page of the runs recorded in tests/data/series/breaking (a patch
making nvmet reject addr_trtype=tcp), its DOM as chromium built it and a screenshot
that shows the page was drawn; escaping of everything a document or patchwork says; a
rejected series; a plain run's page; the index, newest first.

Without chromium the browser tests skip, except under CI (CI set), where they fail:
ci/setup installs it."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from mptcp_nvme.host.results import faults_report, pages
from mptcp_nvme.host.series import compare, patches, verdict
import tests
from tests.support.browser import assert_drawn, browser_in

DATA = tests.DATA / "series" / "breaking"
MODULES = "selftests/test_modules.py::test_nvme_tcp_modules_load"
CONNECT = "selftests/test_datapath.py::test_connect[tcp-1path-loss0]"
SUBJECT = "nvmet: reject addr_trtype=tcp"
BLUE, GREEN = (0, 0, 255), (0, 128, 0)        # the fault timeline and matrix stand-ins
MBOX = ("From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH 1/1] " + SUBJECT + "\n\n---\n"
        "diff --git a/x b/x\n--- a/x\n+++ b/x\n")
PATCHWORK = {"series": {"id": 7, "name": "nvmet: reject tcp", "version": 2,
                        "web_url": "https://patchwork.example.org/project/nvme/list/?series=7",
                        "mbox": "https://patchwork.example.org/series/7/mbox/"},
             "patches": [{"id": 11, "name": f"[v2,1/1] {SUBJECT}",
                          "web_url": "https://patchwork.example.org/patch/11/"}],
             "check": {"state": "fail", "context": "mptcp-nvme",
                       "description": "new failure: test_nvme_tcp_modules_load, "
                                      "test_connect[tcp-1path-loss0]"}}


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    return browser_in(tmp_path_factory.mktemp("chromium"))


def a_series(tmp_path, mbox=MBOX):
    found = tmp_path / "both.mbox"
    found.write_text(mbox)
    return patches.Series("both.mbox", "mbox", Path("/k"), "ecf539427ae7" + "0" * 28,
                          patches.split_mbox(found, tmp_path / "scratch"))


@pytest.fixture
def breaking(tmp_path):
    """The recorded runs judged as 'mptcp-nvme series' does (test_series.py), the bot's
    patchwork.json beside them, a console log, a fault table and two charts."""
    out = tmp_path / "series-7-v2"
    shutil.copytree(DATA, out)
    runs = {name: json.loads((out / name / "results.json").read_text())
            for name in ("base", "series")}
    changes = compare.compare(runs["base"], runs["series"])
    verdict.write(out, a_series(tmp_path), runs, changes, compare.exit_code(changes))
    (out / "patchwork.json").write_text(json.dumps(PATCHWORK))
    (out / "series/vm-main").mkdir()
    (out / "series/vm-main/console-1.log").write_text("[    0.000000] Linux version 7.3.4\n")
    outcome = {"fault": "link-down", "trtype": "mptcp", "paths": 2,
               "impact": {"baseline": 2048, "longest_stall_s": 1.5, "recovered": True,
                          "recovery_s": 2.0}, "subflows": {"before": 2, "during": 1, "after": 2}}
    (out / "series/faults.md").write_text(faults_report.markdown([outcome]))
    (out / "series/faults").mkdir()
    image(out / "series/faults/link-down-mptcp.png", BLUE, (40, 200))
    image(out / "series/matrix.png", GREEN, (60, 300))
    return out


def image(path, colour, shape):
    import matplotlib.image
    import numpy
    matplotlib.image.imsave(path, numpy.tile(numpy.array(colour) / 255, (*shape, 1)))


def rows(dom, table):
    """(class, cells) of a table's rows under its head."""
    return dom.tables[table][1:]


def test_series_page_of_real_runs_shows_what_the_series_broke(breaking, browser, tmp_path):
    page = pages.write_series_page(breaking)
    assert page == breaking / "index.html"
    dom = browser.dom(page)
    assert f"new failures: {CONNECT}, {MODULES}" in dom.by_id["verdict"]
    assert "patchwork check mptcp-nvme: fail new failure: test_nvme_tcp_modules_load" in \
        dom.by_id["check"]
    assert dom.by_id["patches"] == f"1/1 {SUBJECT}"
    assert PATCHWORK["patches"][0]["web_url"] in dom.links
    assert PATCHWORK["series"]["web_url"] in dom.links
    kernels = [cells for _, cells in rows(dom, "kernel-runs")]
    assert kernels == [["base", "7.3.4-virtme", "ecf539427ae787b0e1404bf076e8b0fa507582f6",
                        "x86_64", "2 pass"],
                       ["base+series", "7.3.4-virtme", "0416ce45642ea2e83162d8ec351dcd7ca022dd91",
                        "x86_64", "1 fail, 1 error"]]
    assert [(cls, cells[0].split()[0], cells[1].split()[0], cells[2].split()[0], cells[3])
            for cls, cells in rows(dom, "results")] == [
        ("changed new", CONNECT, "pass", "error", "new failure: pass -> error"),
        ("changed new", MODULES, "pass", "fail", "new failure: pass -> fail")]
    assert [t for t in dom.by_id if re.fullmatch(r"t\d+", t)] == ["t0", "t1"]
    assert "base+series: error reason: setup failed" in dom.by_id["t0"]
    assert "nvmet trtypes mptcp (nvmet rejects addr_trtype=tcp (EINVAL))" in dom.by_id["t1"]
    assert "link-down mptcp ×2 2.0 1.5 s" in dom.text
    assert dom.images == ["series/faults/link-down-mptcp.png", "series/matrix.png"]
    for href in [*dom.images, "series/vm-main/console-1.log", "series/junit.xml", "kcidb.json"]:
        assert href in dom.links and (breaking / href).is_file(), href
    assert "script" not in dom.tags
    shot = browser.screenshot(page, tmp_path / "page.png")
    # the verdict's banner in the fail state's colour, the two charts as drawn
    assert_drawn(shot, {pages.COLOURS["fail"]: 50_000, BLUE: 7_000, GREEN: 16_000})


def test_a_series_with_a_matrix_shows_its_table_and_chart(tmp_path, browser):
    """The bot's trees with a matrix: base+series against the base, as 'mptcp-nvme matrix'
    writes it, on the page as a table and the chart."""
    from mptcp_nvme.host.matrix import document as matrix_json, report
    from tests.unit.host.test_matrix_report import cell, document
    out = tmp_path / "series-8-v1"
    shutil.copytree(DATA / "base", out / "base")
    shutil.copytree(DATA / "base", out / "series")
    runs = {name: json.loads((out / name / "results.json").read_text())
            for name in ("base", "series")}
    changes = compare.compare(runs["base"], runs["series"])
    doc = document([cell(t, 4, "numa", kernel=k, reads=(r - 0.1, r, r + 0.1))
                    for k, reads in (("main", (3.4, 13.2)), ("baseline", (3.4, 13.1)))
                    for t, r in zip(("tcp", "mptcp"), reads)], baseline=True)
    (out / "matrix").mkdir()
    matrix_json.save(doc, out / "matrix/matrix.json")
    report.write_outputs(doc, out / "matrix")
    verdict.write(out, a_series(tmp_path), runs, changes, compare.exit_code(changes),
                  verdict.matrix_summary(out, 0))
    dom = browser.dom(pages.write_series_page(out))
    assert "matrix/matrix.png" in dom.images and "matrix/matrix.md" in dom.links
    section = dom.by_id["extras-matrix"]
    assert section.startswith("base+series against base: the matrix")
    assert "mptcp 4 numa 0" in section and "within noise" in section, section
    assert_drawn(browser.screenshot(out / "index.html", tmp_path / "page.png"),
                 {pages.COLOURS["success"]: 20_000})


def test_the_page_shows_what_documents_and_patchwork_say_as_text(tmp_path, browser):
    out = tmp_path / "hostile"
    (out / "series").mkdir(parents=True)
    hostile = {"nodeid": "t.py::test_x", "description": "<script>alert(1)</script>",
               "result": "fail", "reason": "<b>bold</b>", "time_ms": 5,
               "failure": "assert 1 < 2 & 3 > 4\n</pre><script>alert(2)</script>",
               "crashes": ["panic: <oops> (fingerprint f&1)"], "artifacts": ["../../etc/passwd"]}
    runs = {"base": {"tests": [{**hostile, "result": "pass", "failure": None, "crashes": []}]},
            "series": {"tests": [hostile]}}
    changes = compare.compare(runs["base"], runs["series"])
    document = verdict.document(a_series(tmp_path, MBOX.replace(SUBJECT, "<i>x</i> & y")), runs,
                                changes, 1)
    (out / "results.json").write_text(json.dumps(document))
    (out / "series/results.json").write_text(json.dumps(runs["series"]))
    patchwork = {"series": {"name": "<img src=x onerror=alert(3)>",
                            "web_url": "javascript:alert(4)"},
                 "patches": [{"web_url": "javascript:alert(5)"}],
                 "check": {"state": "fail", "description": "<marquee>"}}
    dom = browser.dom(pages.write_series_page(out, patchwork))
    assert not {"script", "img", "marquee", "b", "i"} & set(dom.tags)
    assert sorted(dom.links) == ["#t0", "results.json", "series/results.json"]
    for text in ("<script>alert(1)</script>", "reason: <b>bold</b>",
                 "assert 1 < 2 & 3 > 4 </pre><script>alert(2)</script>",
                 "panic: <oops> (fingerprint f&1)", "../../etc/passwd (not kept)",
                 "<img src=x onerror=alert(3)>", "1/1 <i>x</i> & y", "<marquee>"):
        assert text in dom.text, text


def test_a_rejected_series_page_says_why_and_that_nothing_ran(tmp_path, browser):
    out = tmp_path / "rejected"
    verdict.rejected(out, a_series(tmp_path), "patch 1/1 does not apply: configfs.c")
    dom = browser.dom(pages.write_series_page(out))
    assert dom.by_id["verdict"] == "fail patch 1/1 does not apply: configfs.c"
    assert dom.by_id["patches"] == f"1/1 {SUBJECT}"
    assert "No kernel ran." in dom.by_id["kernels"] and "No test ran." in dom.by_id["tests"]
    assert "failures" not in dom.by_id
    bot = tmp_path / "no-tree"          # the bot's own verdict: no tree took the series
    bot.mkdir()
    (bot / "patchwork.json").write_text(json.dumps({"check": {"state": "fail",
                                                              "description": "does not apply"}}))
    assert "does not apply" in pages.write_series_page(bot).read_text()


def test_run_page_of_a_real_run_shows_every_test_and_links_its_files(tmp_path, browser):
    run = tmp_path / "run"
    shutil.copytree(DATA / "series", run)
    document = json.loads((run / "results.json").read_text())
    log = "vm-main/artifacts/test_connect/nvme-connect.log"
    document["tests"][1]["artifacts"] = [log, "vm-main/artifacts/gone.txt"]
    (run / "results.json").write_text(json.dumps(document))
    (run / log).parent.mkdir(parents=True)
    (run / log).write_text("nvme connect: EINVAL\n")
    (run / "vm-main/console-1.log").write_text("boot\n")
    dom = browser.dom(pages.write_run_page(run))
    assert dom.by_id["verdict"] == "fail 2 tests: 1 fail, 1 error"
    assert "7.3.4-virtme" in dom.by_id["run"]
    assert "0416ce45642ea2e83162d8ec351dcd7ca022dd91" in dom.by_id["run"]
    assert [(cls, cells[0].split()[0], cells[1].split()[0], cells[2])
            for cls, cells in rows(dom, "results")] == [
        ("failed", MODULES, "fail", ""), ("failed", CONNECT, "error", "setup failed")]
    details = dom.by_id["details"]
    assert "nvmet trtypes mptcp (nvmet rejects addr_trtype=tcp (EINVAL))" in details
    assert "reason: setup failed" in details and "vm-main/artifacts/gone.txt (not kept)" in details
    for href in (log, "vm-main/console-1.log", "ktap.txt", "junit.xml", "results.json"):
        assert href in dom.links and (run / href).is_file(), href
    assert "vm-main/artifacts/gone.txt" not in dom.links


def test_the_index_lists_every_series_judged_newest_first(tmp_path, browser):
    root = tmp_path / "results"
    for name, exit_code, age, check in (("series-1-v1", 0, 300, None),
                                        ("series-2-v1", 1, 200, None),
                                        ("series-3-v2", 1, 100, "warning")):
        out = root / name
        verdict.rejected(out, a_series(tmp_path), f"verdict of {name}")
        document = json.loads((out / "results.json").read_text())
        (out / "results.json").write_text(json.dumps({**document, "exit": exit_code}))
        if check:
            (out / "patchwork.json").write_text(json.dumps(
                {"series": {"name": "the third", "version": 2},
                 "check": {"state": check, "description": "new skips: test_y"}}))
        pages.write_series_page(out)
        stamp = 1_800_000_000 - age
        os.utime(out / "results.json", (stamp, stamp))
    (root / "unfinished").mkdir()
    (root / "unfinished/results.json").write_text("{}")    # no page yet: not listed
    entries = pages.index_entries(root)
    assert [(e["folder"], e["state"], e["title"], e["version"]) for e in entries] == [
        ("series-3-v2", "warning", "the third", 2), ("series-2-v1", "fail", "both.mbox", None),
        ("series-1-v1", "success", "both.mbox", None)]
    assert entries[0]["date"] == "2027-01-15T07:58:20+00:00"
    dom = browser.dom(pages.write_index(root))
    assert dom.by_id["counts"] == "3 series: 1 success, 1 warning, 1 fail"
    assert [(cells[1], cells[3], cells[4]) for _, cells in rows(dom, "index")] == [
        ("the third", "warning", "verdict of series-3-v2 new skips: test_y"),
        ("both.mbox", "fail", "verdict of series-2-v1"),
        ("both.mbox", "success", "verdict of series-1-v1")]
    assert dom.links == [f"{e['folder']}/index.html" for e in entries]


def test_the_tests_table_puts_what_changed_first_new_failures_at_the_top():
    base = {"tests": [{"nodeid": n, "description": n, "result": r}
                      for n, r in (("same", "pass"), ("fixed", "fail"), ("broke", "pass"),
                                   ("skipped", "pass"), ("gone", "pass"))]}
    series = {"tests": [{"nodeid": n, "description": n, "result": r}
                        for n, r in (("same", "pass"), ("fixed", "pass"), ("broke", "fail"),
                                     ("skipped", "skip"), ("new", "xfail"))]}
    document = verdict.document(a_series_stub(), {"base": base, "series": series},
                                compare.compare(base, series), 1)
    assert [(c, t["nodeid"]) for c, t in pages.sorted_tests(document)] == [
        ("new_failures", "broke"), ("fixed", "fixed"), ("new_skips", "skipped"),
        ("not_run", "gone"), ("changed", "new"), (None, "same")]


def a_series_stub():
    return patches.Series("x.mbox", "mbox", Path("/k"), "0" * 40, ())
