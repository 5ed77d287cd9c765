"""A user's blktests as items: results files and check's output captured in a guest
(blktests a608cb5 on 7.3.4+deb13, NVMET_TRTYPES=tcp), tests/data/blktests."""

from mptcp_nvme.channel import BLKTESTS_TOOLS
from mptcp_nvme.guest import blktests
from tests import DATA as TEST_DATA

DATA = TEST_DATA / "blktests"


def test_results_files_give_status_reason_and_runtime():
    passed = blktests.parse_results_file((DATA / "nvme-003-pass.results").read_text())
    assert passed["status"] == "pass" and passed["runtime"].endswith("s")
    assert passed["description"] == "test if we're sending keep-alives to a discovery controller"
    failed = blktests.parse_results_file((DATA / "nvme-018-fail.results").read_text())
    assert (failed["status"], failed["reason"]) == ("fail", "output")
    not_run = blktests.parse_results_file((DATA / "nvme-060-notrun.results").read_text())
    assert not_run["status"] == "not run" and "runtime" not in not_run


def test_a_not_run_test_has_the_reasons_check_printed_under_it():
    output = (DATA / "nvme-060-notrun.check.txt").read_text()
    assert blktests.skip_reasons(output, "nvme/060") == [
        "kernel option NVME_TARGET_DEBUGFS has not been enabled"]
    assert blktests.skip_reasons(output, "nvme/003") == []
    assert blktests.skip_reasons((DATA / "nvme-003-pass.check.txt").read_text(), "nvme/003") == []


def test_the_list_holds_group_and_number_entries_only():
    assert blktests.entries("nvme/003\nnvme/018\n\n# note\nnvme\nblock/001\n") == [
        "nvme/003", "nvme/018", "block/001"]


def test_check_runs_with_the_transport_quick_mode_and_udevadm_on_its_path():
    env = blktests.environment("tcp", quick=False, base={"PATH": "/usr/bin", "HOME": "/root"})
    assert env["NVMET_TRTYPES"] == "tcp" and env["HOME"] == "/root"
    assert env["PATH"] == f"/usr/bin:{BLKTESTS_TOOLS}"
    assert "QUICK_RUN" not in env and "TIMEOUT" not in env
    quick = blktests.environment("loop", quick=True, base={})
    assert (quick["QUICK_RUN"], quick["TIMEOUT"], quick["PATH"]) == ("1", "2", BLKTESTS_TOOLS)


def test_results_land_under_check_s_condition_folder(tmp_path):
    assert blktests.results_folder(tmp_path, "tcp") == tmp_path / "results" / "nodev_tr_tcp"


def test_a_list_is_collected_only_beside_check(tmp_path):
    (tmp_path / "blktests-list.txt").write_text("nvme/003\n")
    assert blktests.collect_file(tmp_path / "blktests-list.txt", None) is None
