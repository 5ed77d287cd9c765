"""dm-multipath tables and status lines (guest/nvme/dm_mpath.py), without a kernel."""


import pytest

from mptcp_nvme.errors import SetupError
from mptcp_nvme.guest.nvme import dm_mpath
import tests

DATA = tests.DATA / "dm"


def test_the_table_has_one_group_with_every_path_and_the_selector():
    line = dm_mpath.table(1048576, ["259:1", "259:3"], "service-time")
    assert line == "0 1048576 multipath 0 0 1 1 service-time 0 2 0 259:1 259:3"
    line = dm_mpath.table(8, ["8:0"], "round-robin", features=("queue_if_no_path",))
    assert line == "0 8 multipath 1 queue_if_no_path 0 1 1 round-robin 0 1 0 8:0"


@pytest.mark.parametrize("selector, paths, problem", [
    ("fastest", ["8:0"], "unknown dm path selector 'fastest'"),
    ("round-robin", [], "at least one path"),
])
def test_a_bad_table_is_refused(selector, paths, problem):
    with pytest.raises(ValueError, match=problem):
        dm_mpath.table(8, paths, selector)


def test_the_table_is_bio_based_by_default_as_multipath_tools_makes_it_for_nvme_tcp():
    assert dm_mpath.FEATURES == ("queue_mode", "bio")
    line = dm_mpath.table(8, ["259:0", "259:1"], "queue-length", dm_mpath.FEATURES)
    assert line == "0 8 multipath 2 queue_mode bio 0 1 1 queue-length 0 2 0 259:0 259:1"


def test_selector_requirements_name_the_kconfig_and_module():
    assert dm_mpath.selector_requirements("service-time") == (
        "kconfig:DM_MULTIPATH_ST", "module:dm_service_time")
    assert dm_mpath.selector_requirements("round-robin") == (
        "kconfig:DM_MULTIPATH", "module:dm_round_robin")


def test_a_garbled_status_is_one_setup_error():
    with pytest.raises(SetupError, match="unexpected dm-multipath status"):
        dm_mpath.parse_status("0 8 multipath 2 0")


def test_status_lines_of_each_selector_parse_to_active_paths():
    """dmsetup status captured on 7.3.4 (service-time, queue-length, round-robin)."""
    lines = (DATA / "status-2path-st-ql-rr.txt").read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert dm_mpath.parse_status(line) == [dm_mpath.PathState("259:0", True, 0),
                                               dm_mpath.PathState("259:1", True, 0)]
    failed = lines[0].replace("259:1 A 0", "259:1 F 3")
    assert dm_mpath.parse_status(failed)[1] == dm_mpath.PathState("259:1", False, 3)
