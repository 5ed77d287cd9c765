"""The matrix summary (rows, matrix.md, matrix.png) from small matrix.json documents
shaped like those `mptcp-nvme matrix` writes: 4 links at 30 Mbit/s, 3 repeats."""

import json
import random
import struct

import pytest

from mptcp_nvme.errors import UsageError
from mptcp_nvme.host.matrix import document as matrix_json, report

RATE = 30
LINK_MIB = RATE * 1e6 / 8 / 2**20           # 3.576 MiB/s


def run(repeat, read, write, status="passed", reason=None):
    return {"repeat": repeat, "status": status, "read_mib": read, "write_mib": write,
            "duration_s": 31.0, "reason": reason}


def cell(trtype, paths, iopolicy, loss=0, reads=(13.0,), writes=None, kernel="main",
         kind="fabric", tls=False, runs=None, rates=(RATE,) * 4, multipath=None):
    """A cell as matrix.py writes it (as before --multipath when ``multipath`` is None);
    ``runs`` replaces the passed repeats built from ``reads``/``writes``."""
    writes = writes or reads
    label = f"{trtype} {paths} {'dm:' if multipath == 'dm' else ''}{iopolicy} {loss}"
    if trtype is None:
        label, usable = "raw", None
    elif trtype == "mptcp":
        usable = len(rates)
    else:
        usable = 1 if iopolicy == "numa" else paths
    return {"kernel": kernel, "kind": kind, "trtype": trtype, "paths": paths,
            "iopolicy": iopolicy, "loss": loss, "tls": tls,
            "label": f"bare {label}" if kind == "bare" else label,
            **({"multipath": multipath} if multipath else {}),
            "links": len(rates), "usable_links": usable, "link_rate_mbit": list(rates),
            "runs": runs if runs is not None else
            [run(i, r, w) for i, (r, w) in enumerate(zip(reads, writes))]}


def raw(reads=(90.0, 91.0, 92.0), kernel="main"):
    return cell(None, None, None, reads=reads, kernel=kernel, kind="raw", rates=())


def document(cells, baseline=False):
    kernels = {"main": {"release": "7.3.4-virtme", "origin": "/src/linux", "config_sha": "abc123"}}
    if baseline:
        kernels["baseline"] = {"release": "7.3.3-virtme", "origin": "/src/base", "config_sha": "def456"}
    return {"version": 1, "created": "2026-11-29T10:00:00+00:00",
            "settings": {"rate_mbit": RATE, "runtime_s": 10, "repeat": 3,
                         "loss": {"delay_ms": 166.7, "loss_pct": 0.5,
                                  "note": "delay scaled by 1000/30 from the seed's 5 ms"},
                         "topology": None},
            "kernels": kernels, "cells": cells}


def by_label(rows):
    return {(row.kernel, row.label): row for row in rows}


# The seed table's cells in its order, at 30 Mbit/s per link.
SEED_SHAPED = [
    cell("tcp", 4, "numa", reads=(3.3, 3.4, 3.5)),
    cell("mptcp", 4, "numa", reads=(13.1, 13.2, 13.4)),
    cell("tcp", 4, "round-robin", reads=(13.4, 13.5, 13.6)),
    cell("mptcp", 4, "round-robin", reads=(13.2, 13.3, 13.3)),
    cell("tcp", 4, "queue-depth", reads=(13.5, 13.5, 13.6)),
    cell("mptcp", 4, "queue-depth", reads=(13.2, 13.3, 13.4)),
    cell("tcp", 4, "round-robin", 1, reads=(3.0, 3.2, 3.3), writes=(2.8, 2.9, 3.0)),
    cell("mptcp", 4, "round-robin", 1, reads=(12.5, 12.7, 12.9)),
    cell("tcp", 4, "queue-depth", 1, reads=(4.9, 5.0, 5.2)),
    cell("mptcp", 4, "queue-depth", 1, reads=(12.4, 12.6, 12.7)),
]
SEED_ORDER = [c["label"] for c in SEED_SHAPED]


def test_the_seed_table_is_the_threads():
    assert len(report.SEED) == 10
    assert report.SEED[("tcp", 4, "numa", 0)] == (114, 114)
    assert report.SEED[("mptcp", 4, "round-robin", 1)] == (426, None)
    assert report.SEED[("tcp", 4, "round-robin", 1)] == (106, 98.5)
    assert ("tcp", 4, "numa", 1) not in report.SEED


def test_medians_and_spreads_over_the_passed_repeats_only():
    runs = [run(0, 12.0, 11.0), run(1, 14.5, 12.5),
            run(2, None, None, "failed", "fio randread: error EIO"), run(3, 13.0, 12.0)]
    (row,) = report.summarize(document([cell("mptcp", 4, "round-robin", runs=runs)]))
    assert (row.runs, row.n, row.status) == (4, 3, "ok")
    assert (row.read, row.read_spread) == (13.0, (12.0, 14.5))
    assert (row.write, row.write_spread) == (12.0, (11.0, 12.5))
    assert row.reason == "fio randread: error EIO"


def test_efficiency_counts_the_links_the_cell_can_use():
    rates = (30, 20, 10, 10)
    doc = document([cell("mptcp", 2, "round-robin", reads=(7.0,), rates=rates),
                    cell("tcp", 2, "round-robin", reads=(5.0,), rates=rates),
                    cell("tcp", 2, "numa", reads=(3.0,), rates=rates), raw()])
    rows = by_label(report.summarize(doc))
    mib = 1e6 / 8 / 2**20
    assert rows["main", "mptcp 2 round-robin 0"].efficiency == pytest.approx(7.0 / (70 * mib))
    assert rows["main", "tcp 2 round-robin 0"].efficiency == pytest.approx(5.0 / (50 * mib))
    assert rows["main", "tcp 2 numa 0"].efficiency == pytest.approx(3.0 / (30 * mib))
    assert rows["main", "raw"].efficiency is None


def test_measured_ratios_against_tcp_numa_and_tcp():
    rows = by_label(report.summarize(document(SEED_SHAPED)))
    assert rows["main", "tcp 4 numa 0"].ratio_tcp_numa == pytest.approx(1.0)
    assert rows["main", "mptcp 4 numa 0"].ratio_tcp_numa == pytest.approx(13.2 / 3.4)
    assert rows["main", "mptcp 4 numa 0"].ratio_vs_tcp == pytest.approx(13.2 / 3.4)
    assert rows["main", "mptcp 4 round-robin 0"].ratio_vs_tcp == pytest.approx(13.3 / 13.5)
    assert rows["main", "mptcp 4 round-robin 1"].ratio_vs_tcp == pytest.approx(12.7 / 3.2)
    assert rows["main", "tcp 4 round-robin 0"].ratio_vs_tcp is None
    assert rows["main", "tcp 4 round-robin 1"].ratio_tcp_numa is None     # no loss-1 tcp numa cell


def test_seed_ratios():
    rows = by_label(report.summarize(document(SEED_SHAPED + [cell("mptcp", 2, "numa")])))
    assert rows["main", "mptcp 4 numa 0"].seed_ratio_vs_tcp == pytest.approx(3.90, abs=0.005)
    assert rows["main", "mptcp 4 numa 0"].seed_ratio_tcp_numa == pytest.approx(445 / 114)
    assert rows["main", "tcp 4 round-robin 0"].seed_ratio_tcp_numa == pytest.approx(4.0)
    assert rows["main", "mptcp 4 round-robin 1"].seed_ratio_vs_tcp == pytest.approx(4.02, abs=0.005)
    assert rows["main", "mptcp 4 round-robin 1"].seed_ratio_tcp_numa is None
    assert rows["main", "tcp 4 round-robin 1"].seed_ratio_vs_tcp is None
    assert rows["main", "mptcp 2 numa 0"].seed_ratio_vs_tcp is None       # not in the seed


def test_a_skipped_cell_keeps_its_row_and_reason_without_numbers():
    reason = "missing: NVMe transport mptcp: /dev/nvme-fabrics lists trtype=tcp|rdma"
    skipped = cell("mptcp", 4, "round-robin", 1,
                   runs=[run(i, None, None, "skipped", reason) for i in range(3)])
    doc = document(SEED_SHAPED[:7] + [skipped])
    rows = report.summarize(doc)
    row = by_label(rows)["main", "mptcp 4 round-robin 1"]
    assert (row.status, row.reason, row.n, row.read, row.efficiency) == ("skipped", reason, 0, None, None)
    assert row.ratio_vs_tcp is None
    line = next(li for li in report.markdown(doc, rows).splitlines() if "mptcp 4 round-robin 1" in li)
    assert "**skipped**: missing: NVMe transport mptcp: /dev/nvme-fabrics lists trtype=tcp\\|rdma" in line
    # no numbers but the seed's; the reason's | cannot split the row
    assert line.split(" | ")[1:] == ["—"] * 7 + ["4.02", "— |"]


def test_a_failed_repeat_outranks_a_skipped_one():
    runs = [run(0, None, None, "skipped", "missing: tc netem"),
            run(1, None, None, "failed", "fio randread: error EIO")]
    (row,) = report.summarize(document([cell("tcp", 4, "numa", runs=runs)]))
    assert (row.status, row.reason) == ("failed", "fio randread: error EIO")


def test_calibration_is_framework_over_bare():
    doc = document([cell("mptcp", 4, "numa", reads=(13.0,), writes=(12.0,)),
                    cell("mptcp", 4, "numa", reads=(13.5,), writes=(13.0,), kind="bare"),
                    cell("tcp", 4, "numa", reads=(3.4,))])
    rows = report.summarize(doc)
    named = by_label(rows)
    fabric = named["main", "mptcp 4 numa 0"]
    assert fabric.calib_read == pytest.approx(13.0 / 13.5)
    assert fabric.calib_write == pytest.approx(12.0 / 13.0)
    assert fabric.calibration == pytest.approx(12.0 / 13.0)
    assert named["main", "tcp 4 numa 0"].calibration is None
    assert named["main", "bare mptcp 4 numa 0"].calibration is None
    assert "| **0.92** |" in report.markdown(doc, rows)


def test_baseline_verdicts_use_the_repeats_spread_as_noise():
    cells = [cell("tcp", 4, "numa", reads=(3.3, 3.4, 3.6)),
             cell("tcp", 4, "numa", reads=(3.55, 3.65, 3.75), kernel="baseline"),   # Δ inside main's spread
             cell("mptcp", 4, "numa", reads=(8.0, 8.2, 7.9)),
             cell("mptcp", 4, "numa", reads=(13.0, 13.2, 12.8), kernel="baseline"),
             cell("mptcp", 4, "round-robin", reads=(13.2, 13.3, 13.4)),
             cell("mptcp", 4, "round-robin", reads=(11.0, 11.1, 11.2), kernel="baseline"),
             cell("tcp", 4, "round-robin")]
    doc = document(cells, baseline=True)
    rows = report.summarize(doc)
    assert {row.kernel for row in rows} == {"main"}          # baseline cells are not rows
    named = by_label(rows)
    assert named["main", "tcp 4 numa 0"].verdict == "within noise"
    drop = named["main", "mptcp 4 numa 0"]
    assert (drop.verdict, drop.base_read) == ("regression", 13.0)
    assert drop.delta_read == pytest.approx((8.0 - 13.0) / 13.0)
    assert named["main", "mptcp 4 round-robin 0"].verdict == "improvement"
    assert named["main", "tcp 4 round-robin 0"].verdict is None        # no baseline cell
    text = report.markdown(doc, rows)
    assert "| baseline READ | Δ READ |" in text and "7.3.3-virtme" in text
    assert "-38.5% regression" in text


def test_load_reads_a_valid_file(tmp_path):
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps(document(SEED_SHAPED)))
    assert matrix_json.load(path) == document(SEED_SHAPED)


@pytest.mark.parametrize("content, words", [
    ("{\"version\": 1, \"cells\": [", "not JSON"),
    (json.dumps({**document([]), "version": 2}), "version 2"),
    (json.dumps({k: v for k, v in document([]).items() if k != "cells"}), "lacks 'cells'"),
    (json.dumps(document([{k: v for k, v in cell("tcp", 4, "numa").items() if k != "runs"}])),
     "cells[0] lacks 'runs'"),
    (json.dumps(document([cell("tcp", 4, "numa", kernel="other")])), "kernel 'other'"),
    (json.dumps([1, 2]), "not a matrix.json object"),
    (json.dumps(document([cell("tcp", 4, "numa"), cell("tcp", 4, "numa", reads=(1.0,))])),
     "cells[1] is the same cell as cells[0]"),
])
def test_load_rejects_what_cannot_be_a_matrix_in_one_line(tmp_path, content, words):
    path = tmp_path / "matrix.json"
    path.write_text(content)
    with pytest.raises(UsageError) as caught:
        matrix_json.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message


def test_load_names_a_missing_file(tmp_path):
    with pytest.raises(UsageError, match="matrix.json: cannot read"):
        matrix_json.load(tmp_path / "matrix.json")


def test_rows_follow_the_seed_tables_order_then_bare_then_raw():
    extra = [cell("mptcp", 2, "round-robin"), cell("tcp", 2, "round-robin"),
             cell("tcp", 4, "min-latency"), cell("mptcp", 4, "numa", kind="bare"), raw()]
    cells = SEED_SHAPED + extra
    random.Random(7).shuffle(cells)
    labels = [row.label for row in report.summarize(document(cells))]
    assert labels == (SEED_ORDER[:2] + ["tcp 2 round-robin 0", "mptcp 2 round-robin 0"]
                      + SEED_ORDER[2:6] + ["tcp 4 min-latency 0"] + SEED_ORDER[6:]
                      + ["bare mptcp 4 numa 0", "raw"])


def test_markdown_has_the_header_and_one_row_per_cell_in_order():
    doc = document(SEED_SHAPED + [raw()])
    rows = report.summarize(doc)
    lines = report.markdown(doc, rows).splitlines()
    assert lines[0] == "# mptcp-nvme matrix: 7.3.4-virtme (2026-11-29)"
    settings = lines[2]
    for words in ("30 Mbit/s per link", "10 s", "3 repeats", "166.7 ms", "0.5 % loss", "scaled by"):
        assert words in settings
    header = lines.index("| run | READ MiB/s | WRITE MiB/s | eff. | ÷ raw | ÷ tcp numa | seed "
                         "| mptcp ÷ tcp | seed | calib. |")
    table = [line for line in lines[header + 2:] if line.startswith("| ")]
    assert [line.split(" | ")[0][2:] for line in table] == SEED_ORDER + ["raw"]
    assert table[1] == "| mptcp 4 numa 0 | 13.2 (13.1–13.4) | 13.2 (13.1–13.4) | 0.92 | 14.5% " \
                       "| 3.88 | 3.90 | 3.88 | 3.90 | — |"
    assert any(line.startswith("- calib.") and "0.95" in line for line in lines)


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("baseline", [False, True])
def test_chart_writes_a_png_sized_by_the_groups(tmp_path, baseline):
    cells = SEED_SHAPED + [raw(), cell("mptcp", 4, "numa", kind="bare"),
                           cell("mptcp", 2, "numa", runs=[run(0, None, None, "skipped", "missing")])]
    if baseline:
        cells += [dict(c, kernel="baseline") for c in SEED_SHAPED[:4]]
    doc = document(cells, baseline=baseline)
    path = report.chart(doc, report.summarize(doc), tmp_path / "matrix.png")
    width, height = png_size(path)
    assert (width, height) == (int(0.9 * 12 * 120), 5 * 120)    # 12 fabric/raw groups


def test_write_outputs_writes_both_next_to_matrix_json(tmp_path):
    doc = document(SEED_SHAPED, baseline=True)
    md_path, png_path = report.write_outputs(doc, tmp_path)
    assert (md_path, png_path) == (tmp_path / "matrix.md", tmp_path / "matrix.png")
    assert md_path.read_text().startswith("# mptcp-nvme matrix: 7.3.4-virtme vs baseline 7.3.3-virtme")
    assert png_size(png_path) == (int(max(8, 0.9 * 10) * 120), 600)


def test_dm_cells_follow_the_native_ones_and_compare_with_raw_and_tcp_numa():
    cells = SEED_SHAPED[:4] + [raw(reads=(130.0,)),
                               cell("tcp", 4, "service-time", reads=(13.0,), multipath="dm"),
                               cell("mptcp", 4, "service-time", reads=(12.0,), multipath="dm"),
                               cell("tcp", 4, "round-robin", reads=(6.5,), multipath="dm")]
    rows = report.summarize(document(cells))
    assert [row.label for row in rows] == SEED_ORDER[:4] + [
        "tcp 4 dm:round-robin 0", "tcp 4 dm:service-time 0", "mptcp 4 dm:service-time 0", "raw"]
    rows = by_label(rows)
    st, mptcp_st = rows["main", "tcp 4 dm:service-time 0"], rows["main", "mptcp 4 dm:service-time 0"]
    numa = rows["main", "tcp 4 numa 0"]
    assert (st.multipath, numa.multipath, rows["main", "raw"].multipath) == ("dm", "native", None)
    assert st.ratio_raw == pytest.approx(0.1)
    assert st.ratio_tcp_numa == pytest.approx(13.0 / numa.read)     # against native tcp numa
    assert mptcp_st.ratio_vs_tcp == pytest.approx(12.0 / 13.0)       # the same selector's tcp
    assert st.seed_ratio_tcp_numa is None and mptcp_st.seed_ratio_vs_tcp is None  # no seed row
    assert st.efficiency == pytest.approx(13.0 / report.mib_per_s(4 * RATE))     # every path
    line = next(li for li in report.markdown(document(cells), list(rows.values())).splitlines()
                if li.startswith("| tcp 4 dm:service-time 0 |"))
    assert "| 10.0% |" in line


def test_an_old_file_without_multipath_is_native_and_matches_new_cells():
    old = cell("tcp", 4, "numa")
    new = dict(old, multipath="native")
    assert report.key(old) == report.key(new)
    assert report.key(raw()) == report.key(dict(raw(), multipath=None))
    doc = document([old, dict(new, label="again")])
    assert "is the same cell as" in matrix_json._problem(doc)


def test_the_transport_section_gives_each_link_its_share_retransmissions_and_medians():
    """Runs as a 4 x 30 Mbit/s tcp round-robin cell sampled them (two links shown)."""
    def link(name, acked, retrans, cwnd, srtt):
        return {"link": name, "connections": 3, "bytes_acked": acked, "bytes_received": 0,
                "retransmits": retrans, "lost_max": 0, "cwnd_median": cwnd,
                "srtt_median_ms": srtt, "delivery_mbit_median": 6.2}
    runs = [{"status": "passed", "transport": {"write": {
        "path1": link("path1", 3 << 20, 3, 10, 64.7), "path2": link("path2", 1 << 20, 0, 12, 38.0)}}},
            {"status": "passed", "transport": {"write": {
                "path1": link("path1", 1 << 20, 1, 14, 60.0), "path2": link("path2", 1 << 20, 2, 10, 40.0)}}},
            {"status": "failed", "transport": None}]
    doc = {"cells": [{"label": "tcp 4 round-robin 0", "runs": runs}, {"label": "raw", "runs": []}]}
    lines = report.transport_section(doc)
    assert lines[1] == "### Transport per link (tcp_info, the sender's side)"
    assert lines[-1] == ("| tcp 4 round-robin 0 | write | 2 | path1 62.5%, 1.00/MiB, cwnd 12.00, "
                         "srtt 62.35 ms; path2 37.5%, 1.00/MiB, cwnd 11.00, srtt 39.00 ms |")
    assert report.transport_section({"cells": [{"label": "raw", "runs": []}]}) == []


def test_the_sampling_cost_section_puts_each_cell_beside_its_unsampled_twin():
    """--sampling-cost's twins: cost = 1 - sampled / unsampled per direction, the
    largest in the sentence; the twin is never a comparison target for other rows."""
    sampled = cell("mptcp", 4, "numa", reads=(13.0, 13.2, 13.1), writes=(10.0, 10.2, 10.1))
    twin = dict(cell("mptcp", 4, "numa", reads=(13.3, 13.5, 13.4), writes=(10.1, 10.3, 10.2)),
                sampled=False, label="mptcp 4 numa 0 unsampled")
    tcp = cell("tcp", 4, "numa", reads=(3.3, 3.4, 3.5))
    doc = document([tcp, twin, sampled])
    rows = report.summarize(doc)
    assert [r.label for r in rows] == ["tcp 4 numa 0", "mptcp 4 numa 0", "mptcp 4 numa 0 unsampled"]
    [(row, other, read_cost, write_cost)] = report.sampling_costs(rows)
    assert (row.label, other.label) == ("mptcp 4 numa 0", "mptcp 4 numa 0 unsampled")
    assert read_cost == pytest.approx(1 - 13.1 / 13.4) and write_cost == pytest.approx(1 - 10.1 / 10.2)
    text = report.markdown(doc, rows)
    assert "### tcp_info sampling cost" in text
    assert f"cost at most {read_cost:.1%} of a cell's median READ or WRITE, over 1 cell(s)" in text
    assert "| mptcp 4 numa 0 | 13.1 (13.0–13.2) | 13.4 (13.3–13.5) | 2.2% |" in text
    assert "sampling cost" not in report.markdown(document([tcp, sampled]),
                                                  report.summarize(document([tcp, sampled])))
