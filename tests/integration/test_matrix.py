"""mptcp-nvme matrix in a VM: a two-cell matrix on the default kernel (its mptcp cells
would SKIP) and a dm-multipath cell, with its calibration and raw cells, then --resume of
the finished run."""

import json

import pytest

from mptcp_nvme.host.matrix import document, report as matrix_report

pytestmark = pytest.mark.vm


def test_a_two_cell_matrix_writes_its_table_chart_and_json(mptcp_nvme):
    axes = ["--trtype", "tcp", "--paths", "2", "--iopolicy", "numa", "--iopolicy", "round-robin",
            "--multipath", "native", "--multipath", "dm", "--dm-selector", "round-robin",
            "--loss", "0", "--repeat", "1", "--runtime", "2", "--calibrate", "1"]
    run = mptcp_nvme("matrix", *axes)
    assert run.code == 0, run.stdout + run.stderr[-3000:]
    folder = run.results_dir
    doc = document.load(folder / "matrix.json")
    rows = {row.label: row for row in matrix_report.summarize(doc)}
    assert set(rows) == {"tcp 2 numa 0", "tcp 2 round-robin 0", "tcp 2 dm:round-robin 0",
                         "bare tcp 2 round-robin 0", "raw"}
    for row in rows.values():
        assert row.status == "ok" and row.read > 0 and row.write > 0, row
    # links, not the guest, bound the fabric cells: 2 x 30 Mbit/s is 7.2 MiB/s
    assert rows["tcp 2 round-robin 0"].read < 2 * 30e6 / 8 / 2**20 * 1.05
    assert rows["tcp 2 round-robin 0"].calibration is not None
    assert rows["tcp 2 numa 0"].ratio_tcp_numa == pytest.approx(1.0)
    # dm-multipath round-robin over the same 2 paths also fills both links
    assert rows["tcp 2 dm:round-robin 0"].multipath == "dm"
    assert rows["tcp 2 dm:round-robin 0"].efficiency > 0.5
    assert rows["tcp 2 dm:round-robin 0"].ratio_raw < 1
    table = (folder / "matrix.md").read_text()
    assert table in run.stdout and "| tcp 2 round-robin 0 |" in table
    assert (folder / "matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["kernels"]["main"]["config_sha"]

    again = mptcp_nvme("matrix", "--resume", folder, *axes)
    assert again.code == 0, again.stderr[-3000:]
    assert "run/s" not in again.stderr          # nothing was left to run: no progress bar
    assert json.loads((folder / "matrix.json").read_text())["cells"] == doc["cells"]
