"""mptcp-nvme matrix without a VM: its bad input, which runs it plans (resume, the
calibration cells), the cell labels and capacities, and the loss scaling."""

import argparse
import json

import pytest

from mptcp_nvme.errors import UsageError
from mptcp_nvme import topology
from mptcp_nvme.vocabulary import BOND_MODES
from mptcp_nvme.host.matrix import run as matrix
from mptcp_nvme.host import suite
from tests.unit.host.test_cli import assert_one_line, cli


def args(**changes):
    base = dict(trtype=None, paths=None, iopolicy=None, loss=None, rate=None, runtime=10, cpus=2,
                multipath=None, dm_selector=None, bond_mode=None,
                repeat=3, tls=False, topology=None, calibrate=1, resume=None, append=None,
                loss_links=None)
    return argparse.Namespace(**{**base, **changes})


def items(repeats=2, trtypes=("tcp", "mptcp"), iopolicies=("numa", "round-robin"), losses=(0, 1)):
    """(nodeid, function, params) as bench_matrix.py's collection gives them."""
    found = []
    for name in ("test_cell", "test_bare"):
        for r in range(repeats):
            for t in trtypes:
                for i in iopolicies:
                    for loss in losses:
                        found.append((f"bench_matrix.py::{name}[r{r}-{t}-4path-{i}-loss{loss}]",
                                      name, {"repeat": r, "trtype": t, "paths": 4, "iopolicy": i,
                                             "loss": bool(loss)}))
    found += [(f"bench_matrix.py::test_raw[r{r}]", "test_raw", {"repeat": r})
              for r in range(repeats)]
    return found


@pytest.mark.parametrize("argv, expected", [
    (["matrix", "--iopolicy", "fastest"], "invalid choice: 'fastest' (choose from numa, "
                                          "round-robin, queue-depth, weighted-lat, adaptive)"),
    (["matrix", "--loss", "2"], "invalid choice: 2 (choose from 0, 1)"),
    (["matrix", "--trtype", "rdma"], "invalid choice: 'rdma'"),
    (["matrix", "--rate", "fast"], "bad rate 'fast'"),
    (["matrix", "--repeat", "0"], "must be 1..100"),
])
def test_bad_axis_values_are_usage_errors(argv, expected):
    code, _, stderr = cli(*argv)
    assert code == 2
    assert_one_line(stderr, expected)


def test_a_corrupt_resume_file_is_one_clear_error(tmp_path):
    (tmp_path / "matrix.json").write_text('{"version": 1, "cells": [')
    code, _, stderr = cli("matrix", "--resume", str(tmp_path))
    assert code == 2
    assert_one_line(stderr, f"{tmp_path / 'matrix.json'}: ")


def test_resume_refuses_other_settings(tmp_path):
    doc = matrix.new_doc(args(rate="30mbit"), "30mbit")
    (tmp_path / "matrix.json").write_text(json.dumps(doc))
    assert matrix.resume(tmp_path, args(), "30mbit")["settings"] == doc["settings"]
    with pytest.raises(UsageError, match="measured with rate_mbit 30.0, not 50.0"):
        matrix.resume(tmp_path, args(), "50mbit")


def test_the_plan_runs_every_cell_and_calibrates_one_per_transport():
    doc = matrix.new_doc(args(), "30mbit")
    planned = matrix.plan(items(), doc, "main", args(calibrate=1), "30mbit")
    fabric = [n for n in planned if "test_cell" in n]
    bare = sorted(n for n in planned if "test_bare" in n)
    assert len(fabric) == 2 * 2 * 2 * 2            # repeats x trtypes x iopolicies x losses
    assert bare == ["bench_matrix.py::test_bare[r0-mptcp-4path-round-robin-loss0]",
                    "bench_matrix.py::test_bare[r0-tcp-4path-round-robin-loss0]"]
    assert [n for n in planned if "test_raw" in n] == ["bench_matrix.py::test_raw[r0]"]
    cells = {c["label"]: c for c in doc["cells"]}
    assert cells["mptcp 4 numa 1"]["usable_links"] == 4
    assert cells["tcp 4 numa 0"]["usable_links"] == 1
    assert cells["tcp 4 round-robin 0"]["usable_links"] == 4
    assert cells["tcp 4 numa 0"]["link_rate_mbit"] == [30.0] * 4
    assert cells["raw"]["kind"] == "raw" and cells["raw"]["link_rate_mbit"] == []
    assert "bare mptcp 4 round-robin 0" in cells
    assert not matrix.plan(items(), doc, "main", args(calibrate=0), "30mbit").keys() & set(bare)


def test_resume_skips_what_was_measured_and_retries_what_failed():
    doc = matrix.new_doc(args(), "30mbit")
    planned = matrix.plan(items(), doc, "main", args(), "30mbit")
    done, failed = sorted(planned)[:2]
    for nodeid, status in ((done, "passed"), (failed, "failed")):
        cell = matrix.find_cell(doc, planned[nodeid]["key"])
        cell["runs"].append({"nodeid": nodeid, "repeat": 0, "status": status, "read_mib": 1.0,
                             "write_mib": 1.0, "duration_s": 1.0, "reason": None})
    again = matrix.plan(items(), doc, "main", args(), "30mbit")
    assert done not in again and failed in again and len(again) == len(planned) - 1
    assert len(doc["cells"]) == len({matrix.cell_key(c) for c in doc["cells"]})


def test_a_topology_files_cells_are_labelled_with_it_and_use_its_rates():
    path = str(topology.TOPOLOGY_DIR / "asymmetric.toml")
    rates, usable = matrix.cell_links("mptcp", 4, "numa", path, "30mbit")
    assert rates == [30.0, 30.0, 30.0, 15.0]        # the file's 1000/500mbit, scaled
    assert usable == 4
    params = {"trtype": "tcp", "paths": 4, "iopolicy": "numa", "loss": False}
    assert matrix.label("fabric", params, False, path) == "tcp 4 numa 0 (asymmetric.toml)"
    assert matrix.label("bare", params, True, None) == "bare tcp 4 numa 0 tls"


def test_loss_is_scaled_to_the_link_rate():
    script, note = topology.loss_profile(10**9)
    assert (script.delay_us, script.loss_pct) == (5000, 0.5)       # the script's own
    slow, note = topology.loss_profile(30 * 10**6, flows=2)
    assert slow.loss_pct == 0.5 and 20000 < slow.delay_us < 40000
    # two flows' loss-limited rate is the seed's share of a link (tcp rr: 106 of 456)
    limit = 2 * topology._flow_limit_bit(2 * slow.delay_us, slow.loss_pct)
    assert limit / 30e6 == pytest.approx(106 / 456, rel=0.01)
    assert "23% of a link" in note and "delay 28.7ms" in note
    assert topology.loss_profile(30 * 10**6, flows=4)[0].delay_us == pytest.approx(
        2 * slow.delay_us, rel=0.01)
    lossy = topology.topology_for_paths(4, loss=True, rate="30mbit", flows=2)
    assert all(link.netem == slow for link in lossy.links)
    assert "delay 28.7" in lossy.description


def test_the_io_timeout_is_scaled_with_the_rate_unless_given(tmp_path, monkeypatch):
    monkeypatch.setenv("MPTCP_NVME_CACHE", str(tmp_path / "cache"))    # not the user's
    assert suite.io_timeout(None, "30mbit") == ["nvme_core.io_timeout=1000"]
    assert suite.io_timeout(None, "1000mbit") == ["nvme_core.io_timeout=30"]
    assert suite.io_timeout(["nvme_core.io_timeout=60"], "30mbit") == []
    assert suite.io_timeout(None, None) == []               # the script's own links
    # run and script get it too, through the one pytest command line they share
    argv = suite.pytest_argv({"rate": "30mbit", "append": ["quiet"]}, tmp_path)
    assert argv[argv.index("--append") + 1:][:3] == ["quiet", "--append", "nvme_core.io_timeout=1000"]
    assert "--append" not in suite.pytest_argv({"rate": None}, tmp_path)


def test_a_bond_cell_is_labelled_by_its_mode_and_uses_the_links_the_mode_can():
    rate = "30mbit"
    assert matrix.cell_links("tcp", 4, "balance-rr", None, rate, "bond")[1] == 4
    assert matrix.cell_links("tcp", 4, "active-backup", None, rate, "bond")[1] == 1
    assert matrix.cell_links("tcp", 4, "802.3ad", None, rate, "bond", cpus=2)[1] == 3
    assert matrix.cell_links("tcp", 4, "balance-xor", None, rate, "bond", cpus=8)[1] == 4
    params = {"trtype": "tcp", "paths": 4, "iopolicy": "802.3ad", "loss": False,
              "multipath": "bond"}
    assert matrix.label("fabric", params, False, None) == "tcp 4 bond:802.3ad 0"


def test_dm_cells_are_their_own_cells_and_never_calibrated():
    found = items(repeats=1, losses=(0,))
    found = [(n, f, dict(p, multipath="native") if f == "test_cell" else p) for n, f, p in found]
    found += [(f"bench_matrix.py::test_cell[r0-dm-{s}-{t}-4path-loss0]", "test_cell",
               {"repeat": 0, "multipath": "dm", "trtype": t, "paths": 4, "iopolicy": s,
                "loss": False}) for t in ("tcp", "mptcp") for s in ("round-robin", "service-time")]
    doc = matrix.new_doc(args(), "30mbit")
    planned = matrix.plan(found, doc, "main", args(), "30mbit")
    cells = {c["label"]: c for c in doc["cells"]}
    assert {"tcp 4 dm:round-robin 0", "mptcp 4 dm:service-time 0", "tcp 4 round-robin 0"} <= set(cells)
    assert cells["tcp 4 dm:round-robin 0"]["multipath"] == "dm"
    assert cells["tcp 4 round-robin 0"]["multipath"] == "native"
    assert cells["bare tcp 4 round-robin 0"]["multipath"] == "native"
    assert cells["raw"]["multipath"] is None
    assert cells["tcp 4 dm:service-time 0"]["usable_links"] == 4
    assert len(doc["cells"]) == len({matrix.cell_key(c) for c in doc["cells"]})
    assert sum("test_bare" in n for n in planned) == 2       # native round-robin only


def test_multipath_and_selectors_are_axes_with_usage_errors():
    assert matrix.axes(args(multipath=None, dm_selector=None))["multipath"] == ["native"]
    chosen = matrix.axes(args(multipath=["native", "dm"], dm_selector=["queue-length"]))
    assert chosen["multipath"] == ["native", "dm"] and chosen["dm_selector"] == ["queue-length"]
    chosen = matrix.axes(args(multipath=["bond"], bond_mode=["802.3ad"]))
    assert chosen["multipath"] == ["bond"] and chosen["bond_mode"] == ["802.3ad"]
    assert matrix.axes(args())["bond_mode"] == list(BOND_MODES)
    for argv, expected in ((["matrix", "--multipath", "md"],
                            "invalid choice: 'md' (choose from native, dm, bond)"),
                           (["matrix", "--dm-selector", "fastest"], "choose from service-time, "
                            "queue-length, round-robin"),
                           (["matrix", "--bond-mode", "broadcast"], "choose from balance-rr, "
                            "active-backup, balance-xor, 802.3ad")):
        code, _, stderr = cli(*argv)
        assert code == 2
        assert_one_line(stderr, expected)


def test_sampling_cost_plans_an_unsampled_twin_of_each_fabric_cell_only():
    """--sampling-cost: bench_matrix parametrizes ``sampled``; each fabric cell gets a twin
    labelled 'unsampled', its own cell; bare and raw cells are not doubled."""
    found = []
    for nodeid, name, params in items(repeats=1, trtypes=("mptcp",), iopolicies=("numa",),
                                      losses=(0,)):
        if name == "test_cell":
            found += [(nodeid.replace("[", f"[{s}-"), name, {**params, "sampled": s == "sampled"})
                      for s in ("sampled", "unsampled")]
        else:
            found.append((nodeid, name, params))
    doc = matrix.new_doc(args(), "30mbit")
    planned = matrix.plan(found, doc, "main", args(), "30mbit")
    assert len([n for n in planned if "test_cell" in n]) == 2
    labels = sorted(c["label"] for c in doc["cells"])
    assert labels == ["bare mptcp 4 numa 0", "mptcp 4 numa 0", "mptcp 4 numa 0 unsampled", "raw"]
    twin = next(c for c in doc["cells"] if c["label"].endswith("unsampled"))
    assert twin["sampled"] is False and twin["kind"] == "fabric"


def test_sampling_cost_and_no_sampling_together_are_one_line():
    code, _, stderr = cli("matrix", "--sampling-cost", "--no-transport-sampling")
    assert code == 2
    assert_one_line(stderr, "--sampling-cost measures each cell with and without tcp_info "
                            "sampling: it cannot go with --no-transport-sampling")
