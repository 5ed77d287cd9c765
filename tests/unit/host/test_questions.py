"""mptcp-nvme report (host/matrix/questions.py) without a VM: matrix documents shaped
like those `matrix` writes (tests/unit/host/test_matrix_report.py's cells) and the fault
outcomes a real run recorded (tests/data/faults), plus bond outcomes made from them."""

import json
import re

import pytest

from mptcp_nvme.errors import UsageError
from mptcp_nvme.host.matrix import questions
from tests.unit.host.test_cli import assert_one_line, cli
from tests.unit.host.test_matrix_report import SEED_SHAPED, cell, document
from tests.support.browser import browser_in
import tests

RECORDED_FAULTS = json.loads((tests.DATA / "faults" / "faults.json").read_text())


def link(bytes_acked, retransmits):
    return {"bytes_acked": bytes_acked, "retransmits": retransmits}


def sampled_run(repeat, read, write, per_link_read):
    return {"repeat": repeat, "status": "passed", "read_mib": read, "write_mib": write,
            "duration_s": 31.0, "reason": None,
            "transport": {"read": per_link_read, "write": per_link_read}}


def with_transport(base, per_link_read):
    base["runs"] = [sampled_run(r["repeat"], r["read_mib"], r["write_mib"], per_link_read)
                    for r in base["runs"]]
    return base


def folders(tmp_path, cells, outcomes=None, loss_links=None):
    matrix = tmp_path / "matrix"
    matrix.mkdir()
    doc = document(cells)
    doc["settings"]["loss_links"] = loss_links
    (matrix / "matrix.json").write_text(json.dumps(doc))
    found = [matrix]
    if outcomes is not None:
        faults = tmp_path / "faults"
        faults.mkdir()
        (faults / "faults.json").write_text(json.dumps(outcomes))
        found.append(faults)
    return found


def bond_outcome(fault, mode, stall):
    plain = next(o for o in RECORDED_FAULTS if o["fault"] == fault and o["trtype"] == "tcp")
    return dict(plain, paths=1, via=f"bond:{mode}",
                impact=dict(plain["impact"], longest_stall_s=stall))


def test_each_question_is_answered_with_its_figures(tmp_path):
    bonds = [cell("tcp", 4, "balance-rr", multipath="bond", reads=(3.5, 3.6, 3.4)),
             cell("tcp", 4, "802.3ad", multipath="bond", reads=(6.8, 7.0, 6.9))]
    for bond in bonds:
        bond["label"] = f"tcp 4 bond:{bond['iopolicy']} 0"
        bond["usable_links"] = 4 if bond["iopolicy"] == "balance-rr" else 3
    for run, spread in zip(bonds[0]["runs"], (1, 3, 5)):      # the slaves' interfaces
        run["link_bytes"] = {"read": {"path1": 50 - spread, "path2": 50 + spread,
                                      "path3": 0, "path4": 0}}
    lossy = with_transport(cell("mptcp", 4, "round-robin", 1, reads=(12.5, 12.7, 12.9)),
                           {"path1": link(3 * 2**20, 3), "path4": link(1 * 2**20, 9)})
    outcomes = RECORDED_FAULTS + [bond_outcome("blackhole", "802.3ad", 3.5),
                                  bond_outcome("blackhole", "balance-rr", 11.4)]
    text = questions.markdown(folders(tmp_path, [*SEED_SHAPED[:7], *SEED_SHAPED[8:], *bonds,
                                                 lossy], outcomes, loss_links=1))
    assert "With round-robin over 4 links and no loss, NVMe/TCP read 13.5 MiB/s and wrote " \
           "13.5; NVMe over MPTCP read 13.3 (0.99x)" in text
    assert "The best bond mode, 802.3ad, read 6.9 MiB/s and wrote 6.9 over 4 links " \
           "(efficiency 0.64 of the links it can use)." in text
    assert "| tcp 4 bond:balance-rr 0 | 3.5 | 3.5 | 0.24 | path1 47% path2 53% path3 0% " \
           "path4 0% | 1.03x | 3.86x (tcp 4 round-robin 0) | 3.80x (mptcp 4 round-robin 0) |" in text
    assert "| tcp 4 bond:802.3ad 0 | 6.9 | 6.9 | 0.64 | — | 2.03x |" in text
    assert re.search(r"Under the same faults the bond stalled up to 11\.4 s \(bond:802\.3ad "
                     r"3\.5 s, bond:balance-rr 11\.4 s\); without a bond: tcp blackhole "
                     r"\d+\.\d s, mptcp blackhole \d+\.\d s\.", text), text
    assert "| blackhole | tcp ×1 on bond:802.3ad | 3.5 s |" in text
    assert "With loss on the last 1 of 4 links, NVMe over MPTCP (round-robin) read 12.7 MiB/s, " \
           "3.97x NVMe/TCP's 3.2, 0.95x of its own lossless read." in text
    assert "| mptcp 4 round-robin 1 | the last 1 of 4 links | 12.7 | 12.7 | 0.95x | 3.97x | " \
           "path1 75% 1.0/MiB; path4 25% 9.0/MiB |" in text
    assert "## 4. Subflow layout and scheduler\n\nNot measured here" in text
    assert "NVMe over MPTCP (numa) against NVMe/TCP: reads 3.88x, writes 3.88x; MPTCP wrote " \
           "13.2 MiB/s against its 13.2 read (1.00x)." in text
    assert text.count("Measured on 7.3.4-virtme; 30 Mbit/s per link, fio 10 s per job, "
                      "3 repeats") == 4


def test_what_the_folders_lack_is_said_with_the_axes_that_would_answer_it(tmp_path):
    text = questions.markdown(folders(tmp_path, [cell("tcp", 4, "numa")]))
    assert "No bond cells in these folders (`matrix --multipath native --multipath bond`)." in text
    assert "No bond fault cases in these folders (`run -k bond_fault`)." in text
    assert "No loss cells in these folders (`matrix --loss 1`" in text
    assert "Not measured here: no tcp round-robin or queue-depth cell" in text


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    return browser_in(tmp_path_factory.mktemp("chromium"))


def test_report_writes_markdown_and_a_page(tmp_path, browser):
    md, page = questions.write(folders(tmp_path, SEED_SHAPED, RECORDED_FAULTS), tmp_path / "out")
    assert md.read_text().startswith("# mptcp-nvme report: the reviewers' questions, measured")
    dom = browser.dom(page)
    assert "1. Native NVMe multipath against MPTCP" in dom.text
    assert dom.tables and "script" not in dom.tags


@pytest.mark.parametrize("make, words", [
    (lambda p: p / "missing", "not a folder"),
    (lambda p: p, "no matrix.json nor faults.json"),
    (lambda p: (p / "faults.json").write_text("{") and p, "not a faults.json"),
    (lambda p: (p / "faults.json").write_text("{}") and p, "not a faults.json (a list"),
    (lambda p: (p / "matrix.json").write_text("[]") and p, "not a matrix.json object"),
])
def test_a_bad_folder_is_one_line_and_exit_2(tmp_path, make, words):
    folder = make(tmp_path)
    with pytest.raises(UsageError, match=re.escape(words)):
        questions.load([folder])
    code, _, stderr = cli("report", str(folder), "--out", str(tmp_path / "out"))
    assert code == 2
    assert_one_line(stderr, words)


def test_a_real_bond_matrix_reads_back_with_its_tcp_info_counters(tmp_path):
    """matrix.json of a real run (7.3.4 stock, 4 x 30 Mbit/s, bond cells in two modes,
    one repeat, tcp_info sampled): the bond's connections share its one address, so
    tcp_info puts every byte on path1 (the slaves' split is in the cell's diagnostics,
    from the links' counters)."""
    folder = tmp_path / "bond"
    folder.mkdir()
    recorded = tests.DATA / "matrix" / "bond-802.3ad-balance-rr-stock.json"
    (folder / "matrix.json").write_text(recorded.read_text())
    matrices, _ = questions.load([folder])
    measured = questions.Measured(matrices)
    [(_, row, cell)] = [item for item in measured.fabric() if item[1].iopolicy == "balance-rr"]
    assert round(row.read, 1) == 3.5 and row.efficiency == pytest.approx(3.53 / 14.31, abs=0.01)
    counters = questions.link_counters(cell, "read")
    assert counters["path1"][0] == 1.0 and counters["path2"] == (0.0, None)
    assert counters["path1"][1] == pytest.approx(449 / (43284024 / 2**20))
    text = questions.markdown([folder])
    assert "The best bond mode, balance-rr, read 3.5 MiB/s" in text
